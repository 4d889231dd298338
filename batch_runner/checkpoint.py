"""Checkpoints: finished rows saved in parts, so that `--resume` loses and doubles nothing.

Layout, next to the output file ``OUT``::

    OUT.parts/manifest.json        input fingerprint (path, size, rows, schema hash), format version
    OUT.parts/part-00001.parquet   measurements of finished rows (MEASUREMENT_SCHEMA)
    OUT.parts/part-00002.parquet   ...

Every file is written to a temporary name in the same directory and renamed into place
(``os.replace`` is atomic on POSIX), so a crash at any moment leaves only whole parts; stray
temporary files are ignored. Parts are flushed every ``every_rows`` completions (but at most
once per ``min_seconds``) or ``every_seconds`` (wall) after the last flush, whichever comes
first; a crash loses at most that much finished work, which ``--resume`` runs again. A part
holds measurements only (id + output columns), not the input columns: the final table is the
input table joined with all parts, so a resumed run writes exactly the columns of a clean run.

    ckpt = Checkpoint.create(parts_dir, fingerprint)       # or Checkpoint.open(...) to resume
    ckpt.add(measurement_row); ckpt.flush(); done = ckpt.load()
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batch_runner.errors import OutputError, UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PART_GLOB = "part-*.parquet"

# One row per finished request (in any order). Times are ms from the start of the run that
# executed the row; `run` says which run (0 = first, 1 = first resume, ...).
MEASUREMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("rank", pa.int64()),
        ("run", pa.int64()),
        ("attempts", pa.int64()),
        ("submit_ms", pa.float64()),
        ("first_token_ms", pa.float64()),
        ("finish_ms", pa.float64()),
        ("output_text", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),
        ("predicted_e2e_ms", pa.float64()),
        ("engine", pa.string()),
        ("replica", pa.int64()),  # the replica that served the row (--replicas); else null
    ]
)


class CheckpointError(UserError):
    """The checkpoint cannot be used as asked (wrong input file, no --resume, corrupt part)."""


class CheckpointWriteError(OutputError):
    """A part could not be written (disk full, permissions); what was saved before is intact."""


def parts_dir_for(out: str | os.PathLike) -> Path:
    """``results.parquet`` -> ``results.parquet.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


@dataclass(frozen=True)
class Fingerprint:
    """Identifies an input file cheaply (Parquet metadata only, no data read)."""

    path: str  # absolute path
    size: int  # bytes
    rows: int  # rows in the Parquet metadata
    schema_hash: str  # sha256 of the Arrow schema's text

    @staticmethod
    def of(path: str | os.PathLike) -> Fingerprint:
        path = Path(path).resolve()
        meta = pq.read_metadata(path)
        schema_text = meta.schema.to_arrow_schema().to_string(show_schema_metadata=False)
        return Fingerprint(
            path=str(path),
            size=path.stat().st_size,
            rows=meta.num_rows,
            schema_hash=hashlib.sha256(schema_text.encode()).hexdigest()[:16],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "rows": self.rows,
            "schema_hash": self.schema_hash,
        }


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_part_file(table: pa.Table, path: Path) -> None:
    """Write one part: temporary file in the same directory, then rename (never half a part)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename must not land before the data (power loss)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)


class Checkpoint:
    """Buffers finished rows and writes them as numbered parts."""

    def __init__(
        self,
        directory: Path,
        *,
        every_rows: int = 50,
        every_seconds: float = 10.0,
        min_seconds: float = 1.0,
        run: int = 0,
        next_part: int = 1,
    ):
        self.directory = Path(directory)
        self.every_rows = max(1, every_rows)
        self.every_seconds = every_seconds
        self.min_seconds = min_seconds
        self.run = run
        self._next_part = next_part
        self._buffer: list[Mapping[str, Any]] = []
        self._last_flush = time.monotonic()
        self.saved_rows = 0  # rows written by this process

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, fingerprint: Fingerprint, **kwargs) -> Checkpoint:
        """A new checkpoint; refuses to overwrite the parts of an earlier, unfinished run."""
        directory = Path(directory)
        if directory.exists() and any(directory.glob(PART_GLOB)):
            raise CheckpointError(
                f"{directory} holds checkpointed rows of an earlier run that did not finish. "
                "Add --resume to continue it, or delete that directory to start over."
            )
        try:
            directory.mkdir(parents=True, exist_ok=True)
            manifest = {"version": FORMAT_VERSION, "input": fingerprint.as_dict(), "runs": 1}
            _write_bytes_atomic(directory / MANIFEST, json.dumps(manifest, indent=2).encode())
        except OSError as exc:
            raise CheckpointWriteError(
                f"cannot create the checkpoint directory {directory}: {_describe_os_error(exc)}"
            ) from exc
        return cls(directory, **kwargs)

    @classmethod
    def open(cls, directory: Path, fingerprint: Fingerprint, **kwargs) -> Checkpoint:
        """Reopen the checkpoint of an earlier run of the same input file (for ``--resume``)."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot resume: {manifest_path} is missing or unreadable ({exc}). Delete "
                f"{directory} and run without --resume."
            ) from exc
        if manifest.get("version") != FORMAT_VERSION:
            raise CheckpointError(
                f"cannot resume: {directory} was written by checkpoint format "
                f"{manifest.get('version')}, this version reads {FORMAT_VERSION}."
            )
        saved = manifest.get("input", {})
        mine = fingerprint.as_dict()
        if saved != mine:
            diffs = ", ".join(
                f"{k}: checkpoint {saved.get(k)!r} vs now {mine[k]!r}"
                for k in mine
                if saved.get(k) != mine[k]
            )
            raise CheckpointError(
                f"cannot resume: the checkpoint in {directory} belongs to a different input "
                f"file ({diffs}). Resume with the same input file, or delete {directory} to "
                "start over."
            )
        parts = sorted(directory.glob(PART_GLOB))
        next_part = 1 + max((_part_number(p) for p in parts), default=0)
        run = int(manifest.get("runs", 1))
        manifest["runs"] = run + 1
        try:
            _write_bytes_atomic(manifest_path, json.dumps(manifest, indent=2).encode())
        except OSError as exc:
            raise CheckpointWriteError(
                f"cannot update {manifest_path}: {_describe_os_error(exc)}"
            ) from exc
        return cls(directory, run=run, next_part=next_part, **kwargs)

    # -- reading -----------------------------------------------------------------------------
    def load(self) -> pa.Table:
        """Every checkpointed row, first copy of an id wins (parts are read in number order)."""
        return load_parts(self.directory)

    # -- writing -----------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def add(self, row: Mapping[str, Any]) -> None:
        """Buffer one finished row (a dict over MEASUREMENT_SCHEMA); flush when due."""
        self._buffer.append(row)
        self.maybe_flush()

    def maybe_flush(self) -> None:
        """Flush after ``every_rows`` rows (but at most once per ``min_seconds``: a fast engine
        must not spend its time writing tiny parts) or ``every_seconds`` after the last one."""
        if not self._buffer:
            return
        elapsed = time.monotonic() - self._last_flush
        due_rows = len(self._buffer) >= self.every_rows and elapsed >= self.min_seconds
        if due_rows or elapsed >= self.every_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as the next part (no-op when nothing is buffered)."""
        if not self._buffer:
            return
        path = self.directory / f"part-{self._next_part:05d}.parquet"
        table = pa.Table.from_pylist(list(self._buffer), schema=MEASUREMENT_SCHEMA)
        try:
            write_part_file(table, path)
        except OSError as exc:
            raise CheckpointWriteError(
                f"could not write checkpoint part {path}: {_describe_os_error(exc)}. "
                f"{len(self._buffer)} finished row(s) of this run were not saved and will run "
                f"again; rows checkpointed before are intact in {self.directory}. Free space "
                "and run the same command with --resume."
            ) from exc
        self.saved_rows += len(self._buffer)
        self._buffer.clear()
        self._next_part += 1
        self._last_flush = time.monotonic()

    def remove(self) -> None:
        """Delete the parts directory (after the final output is safely written)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _part_number(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def load_parts(directory: Path) -> pa.Table:
    """All rows of all parts in ``directory`` (MEASUREMENT_SCHEMA), each id once."""
    directory = Path(directory)
    tables = []
    for path in sorted(directory.glob(PART_GLOB), key=_part_number):
        try:
            t = pq.read_table(path)
        except Exception as exc:
            raise CheckpointError(
                f"cannot read checkpoint part {path} ({exc}); delete that file to re-run its "
                "rows, then --resume again."
            ) from exc
        if "replica" not in t.column_names:  # parts written before the replica column
            t = t.append_column("replica", pa.nulls(t.num_rows, pa.int64()))
        tables.append(t.select(MEASUREMENT_SCHEMA.names).cast(MEASUREMENT_SCHEMA))
    if not tables:
        return MEASUREMENT_SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    ids = table.column("id").to_pylist()
    seen: set[str] = set()
    keep = []
    for i, rid in enumerate(ids):
        if rid not in seen:
            seen.add(rid)
            keep.append(i)
    if len(keep) != len(ids):
        table = table.take(keep)
    return table
