"""Parquet in and out: open with clear errors, read in record batches, write atomically.

Reading never materialises a whole file as Python objects: ``iter_batches`` yields
``pyarrow.RecordBatch`` es of at most ``batch_size`` rows, so a million-row request file is
validated batch by batch with ``pyarrow.compute``.

Writing is atomic: the table goes to a hidden temporary file in the target's own directory, is
fsync'ed, and then ``os.replace`` d over the target (a rename within one file system is atomic on
POSIX), and the directory entry is fsync'ed too. A reader therefore sees either the old file or
the complete new one, never a half-written one, whatever point a crash (or ``kill -9``) hits. A
crash can leave a ``.<name>.<pid>.<random>.tmp`` file behind; it is never mistaken for a result::

    write_parquet_atomic(table, "results.parquet")
    with atomic_parquet_writer("big.parquet", schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch_runner.errors import InputError, OutputError

DEFAULT_BATCH_ROWS = 65_536
DEFAULT_COMPRESSION = "zstd"


def open_parquet(path: str | Path) -> pq.ParquetFile:
    """Open a Parquet file for batch reading; any failure becomes an ``InputError``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give the path of one Parquet file.", path=path)
    try:
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file.", path=path) from None
    except PermissionError:
        raise InputError(f"{path}: cannot read the file (permission denied).", path=path) from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InputError(
            f"{path} is not a readable Parquet file ({_first_line(e)}). Requests must be a "
            "Parquet file with one row per request (see README, 'Request file').",
            path=path,
        ) from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the file ({_first_line(e)}).", path=path) from None


def iter_batches(
    path: str | Path,
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Yield the file's rows as record batches; a damaged file raises ``InputError``."""
    batches = open_parquet(path).iter_batches(
        batch_size=batch_size, columns=columns, use_threads=True
    )
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            raise InputError(
                f"{path} is damaged and cannot be read to the end ({_first_line(e)}).", path=path
            ) from None
        yield batch


def rejects_path(out: str | Path) -> Path:
    """Where ``--on-bad-rows=skip`` puts bad rows: results.parquet -> results.rejects.parquet."""
    out = Path(out)
    if out.suffix == ".parquet":
        return out.with_suffix(".rejects.parquet")
    return out.with_name(out.name + ".rejects.parquet")


def write_parquet_atomic(
    table: pa.Table, path: str | Path, *, compression: str = DEFAULT_COMPRESSION
) -> Path:
    """Write ``table`` to ``path`` so that a crash never leaves a half-written file there."""
    path = Path(path)
    try:
        with atomic_parquet_writer(path, table.schema, compression=compression) as writer:
            writer.write_table(table)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({_first_line(e)}).", path=path) from e
    return path


@contextlib.contextmanager
def atomic_parquet_writer(
    path: str | Path, schema: pa.Schema, *, compression: str = DEFAULT_COMPRESSION
) -> Iterator[pq.ParquetWriter]:
    """A ``ParquetWriter`` on a temporary file that replaces ``path`` only on a clean exit.

    If the body raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _create_temp_beside(path)
    try:
        writer = pq.ParquetWriter(tmp, schema, compression=compression)
        try:
            yield writer
        finally:
            writer.close()
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _create_temp_beside(path: Path) -> Path:
    """Create an empty hidden file next to ``path`` (same file system, so the rename is atomic)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        # O_EXCL: never write into someone else's temp file; 0o666 lets the umask decide the mode.
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as e:
        raise OutputError(f"cannot write {path} ({_first_line(e)}).", path=path) from e
    return tmp


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform/file system allows it.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
