"""The request file: read, validate and normalize a Parquet file of requests, batch by batch.

One row is one request. ``read_requests`` returns the *normalized request table*, the contract
between reading, planning, executing and writing: the columns of ``NORMALIZED_SCHEMA``, in that
order and with those types, followed by every other input column, in input row order. What each
column may hold (types, ranges, chat rules) is ``batch_runner.request_contract``; the row checks
are ``batch_runner.request_rows``. An input column named like an output column is carried as
``input_<name>`` (``RequestFile.renamed``; ``notices`` says so).

Two kinds of problems. A *column* problem (no prompt and no messages column, a column of the wrong
type such as an integer prompt or a string SLO, an empty or unreadable file) makes the whole file
unusable: ``InputError``, whatever ``on_bad_rows`` says. A *row* problem (null or duplicate id,
empty prompt, a value out of its range, a chat that breaks the rules, ...) is either an
``InputError`` that names the column, the first few row ids and the offending values
(``on_bad_rows="error"``), or sets the row aside in ``RequestFile.rejects``: the row's input
columns plus ``reject_row`` (0-based row number) and ``reject_reason`` (``on_bad_rows="skip"``).
Either way no row is lost: ``table.num_rows + rejects.num_rows`` is the input's row count.

Validation is column-wise with ``pyarrow.compute`` on record batches; no row becomes a Python
object except the few named in a message. Duplicate ids are found in a first pass over the ``id``
column alone::

    requests = read_requests("requests.parquet", slo_config=load_presets(toml, scale="cpu"))
    requests.table.column("slo_e2e_ms")
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_runner import request_contract as contract
from batch_runner.errors import ConfigError, InputError, format_rows
from batch_runner.parquet_io import DEFAULT_BATCH_ROWS, iter_batches, open_parquet
from batch_runner.presets import SloPresets, TaskPreset, load_presets
from batch_runner.request_contract import (  # noqa: F401  (public names of this module)
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TASK,
    DEFAULT_WEIGHT,
    MAX_NEW_TOKENS,
    MAX_TEXT_BYTES,
    MESSAGE_TYPE,
    MESSAGES_TYPE,
    NORMALIZED_COLUMNS,
    NORMALIZED_SCHEMA,
    REJECT_COLUMNS,
    SLO_COLUMNS,
)
from batch_runner.request_rows import Check, fill_defaults, validate_batch

OnBadRows = Literal["error", "skip"]


class RequestFile(NamedTuple):
    table: pa.Table  # the normalized request table (valid rows, input order)
    rejects: pa.Table | None  # input columns + reject_row + reject_reason; None if no bad row
    source: Path  # the file read
    renamed: Mapping[str, str] = {}  # input column -> its name in the table (and the results)
    rejects_renamed: Mapping[str, str] = {}  # input column -> its name in the rejects file

    @property
    def num_input_rows(self) -> int:
        return self.table.num_rows + (0 if self.rejects is None else self.rejects.num_rows)

    @property
    def notices(self) -> list[str]:
        """One line per input column kept under another name (for the commands to print)."""
        out = contract.rename_notices(dict(self.renamed), "results")
        if self.rejects is not None:
            out += contract.rename_notices(dict(self.rejects_renamed), "rejects file")
        return out


def read_requests(
    path: str | Path,
    *,
    slo_config: SloPresets | Mapping[str, TaskPreset] | str | Path | None = None,
    on_bad_rows: OnBadRows = "error",
    batch_size: int = DEFAULT_BATCH_ROWS,
) -> RequestFile:
    """Read and validate a request file; raise ``InputError`` on anything a user must fix.

    ``slo_config`` is a loaded ``SloPresets``, a ``{task: TaskPreset}`` mapping, or a TOML path
    (read with its ``default_scale``); it fills SLOs and ``max_new_tokens`` a row leaves empty.
    """
    if on_bad_rows not in ("error", "skip"):
        raise ValueError(f"on_bad_rows must be 'error' or 'skip', not {on_bad_rows!r}")
    path = Path(path)
    presets = _preset_table(slo_config)
    parquet = open_parquet(path)
    schema = parquet.schema_arrow
    contract.check_schema(schema, path)
    if parquet.metadata.num_rows == 0:
        raise InputError(
            f"{path} has no rows (columns: {', '.join(schema.names) or 'none'}); "
            "there is nothing to run.",
            path=path,
        )
    duplicates = _duplicate_ids(path, schema, batch_size)
    carried = [f for f in schema if f.name not in NORMALIZED_COLUMNS]
    renamed = contract.result_renames(f.name for f in carried)
    out_schema = pa.schema(
        [*NORMALIZED_SCHEMA, *(f.with_name(renamed.get(f.name, f.name)) for f in carried)]
    )
    rejects_renamed = contract.reject_renames(schema.names)
    reject_schema = pa.schema(
        [f.with_name(rejects_renamed.get(f.name, f.name)) for f in schema]
        + [pa.field("reject_row", pa.int64()), pa.field("reject_reason", pa.string())]
    )

    log = _IssueLog()
    good: list[pa.RecordBatch] = []
    bad: list[pa.RecordBatch] = []
    row0 = 0  # the input row number of the batch's first row
    for batch in iter_batches(path, batch_size=batch_size):
        ids, checks, columns = validate_batch(batch, row0, duplicates)
        bad_mask = np.zeros(batch.num_rows, dtype=bool)
        for c in checks:
            if c.mask.any():
                log.add(c, ids, row0)
                bad_mask |= c.mask
        log.bad_rows += int(bad_mask.sum())
        # A file that will be refused is only scanned on, to name every problem in the message.
        if on_bad_rows == "skip" or not log.bad_rows:
            if bad_mask.any():
                bad.append(_reject_batch(batch, bad_mask, checks, row0, reject_schema))
            good.append(_good_batch(batch, columns, ~bad_mask, presets, carried, out_schema))
        row0 += batch.num_rows

    if log.bad_rows and on_bad_rows == "error":
        raise log.error(path, total=row0)
    table = pa.Table.from_batches(good, schema=out_schema)
    rejects = pa.Table.from_batches(bad, schema=reject_schema) if bad else None
    return RequestFile(table, rejects, path, renamed, rejects_renamed)


def _good_batch(
    batch: pa.RecordBatch,
    columns: dict[str, pa.Array],
    keep: np.ndarray,
    presets: tuple[pa.Array, dict[str, pa.Array]] | None,
    carried: list[pa.Field],
    schema: pa.Schema,
) -> pa.RecordBatch:
    """The kept rows: normalized columns with defaults and presets, then the carried ones."""
    keep = pa.array(keep)
    normalized = fill_defaults({k: pc.filter(v, keep) for k, v in columns.items()}, presets)
    return pa.RecordBatch.from_arrays(
        [normalized[name] for name in NORMALIZED_COLUMNS]
        + [pc.filter(batch.column(f.name), keep) for f in carried],
        schema=schema,
    )


def _preset_table(
    slo_config: SloPresets | Mapping[str, TaskPreset] | str | Path | None,
) -> tuple[pa.Array, dict[str, pa.Array]] | None:
    """Presets as columns: task names, and per field an array aligned with them.

    A preset value outside the contract's range is a ``ConfigError`` (it would fill rows)."""
    if slo_config is None:
        return None
    if isinstance(slo_config, str | Path):
        slo_config = load_presets(slo_config)
    tasks = slo_config.tasks if isinstance(slo_config, SloPresets) else slo_config
    if not tasks:
        return None
    fields = (*SLO_COLUMNS, "max_new_tokens")
    for task, preset in tasks.items():
        for field in fields:
            value, r = getattr(preset, field), contract.RANGES[field]
            if value is not None and not r.low <= value <= r.high:
                source = getattr(slo_config, "source", None)
                problem = r.below() if value < r.low else r.above()
                raise ConfigError(
                    f"{source or 'SLO presets'}: task {task!r}: {field} = {value!r} {problem}; "
                    f"{contract.hint(field)}",
                    path=source,
                )
    names = pa.array(list(tasks), type=pa.string())
    values = {
        field: pa.array(
            [getattr(p, field) for p in tasks.values()], type=NORMALIZED_SCHEMA.field(field).type
        )
        for field in fields
    }
    return names, values


def _duplicate_ids(path: Path, schema: pa.Schema, batch_size: int) -> pa.Array:
    """Ids that occur more than once in the file (one pass over the id column alone)."""
    if "id" not in schema.names:
        return pa.array([], type=pa.string())
    chunks = []
    for batch in iter_batches(path, columns=["id"], batch_size=batch_size):
        arr = batch.column(0)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        chunks.append(arr.cast(pa.string()))
    counts = (
        pa.table({"id": pa.chunked_array(chunks, type=pa.string())})
        .group_by("id")
        .aggregate([("id", "count")])
    )
    repeated = pc.and_(pc.greater(counts["id_count"], 1), pc.is_valid(counts["id"]))
    return pc.filter(counts["id"], repeated).combine_chunks()


def _reject_batch(
    batch: pa.RecordBatch,
    bad_mask: np.ndarray,
    checks: list[Check],
    row0: int,
    schema: pa.Schema,
) -> pa.RecordBatch:
    """The bad rows as they came in, with their row number and every problem found in them."""
    rows = np.flatnonzero(bad_mask)
    take = pa.array(rows)
    reasons = []
    for c in checks:
        if not c.mask[rows].any():
            continue
        reason = pa.array(np.where(c.mask[rows], f"{c.column} {c.problem}", None), pa.string())
        if c.values is not None:  # quote the value: "weight is larger than 1e+06: 1e+300"
            quoted = pc.cast(c.values.take(take), pa.string())
            reason = pc.binary_join_element_wise(reason, pc.fill_null(quoted, "null"), ": ")
        reasons.append(reason)
    reason = pc.binary_join_element_wise(*reasons, "; ", null_handling="skip")
    n_input = len(schema) - len(REJECT_COLUMNS)
    kept = [batch.column(i).take(take) for i in range(n_input)]
    return pa.RecordBatch.from_arrays(
        [*kept, pa.array(rows + row0, type=pa.int64()), reason], schema=schema
    )


class _IssueLog:
    """Counts, first few row ids and values per (column, problem), across batches."""

    limit = 5

    def __init__(self) -> None:
        self.issues: dict[tuple[str, str], list] = {}  # -> [count, [row labels], [values]]
        self.bad_rows = 0

    def add(self, c: Check, ids: pa.Array, row0: int) -> None:
        entry = self.issues.setdefault((c.column, c.problem), [0, [], []])
        entry[0] += int(c.mask.sum())
        need = self.limit - len(entry[1])
        if need > 0:
            rows = pa.array(np.flatnonzero(c.mask)[:need])
            for row, label in zip(rows.to_pylist(), ids.take(rows).to_pylist(), strict=True):
                entry[1].append(label if label is not None else f"row {row0 + row}")
            if c.values is not None:
                entry[2] += pc.cast(c.values.take(rows), pa.string()).to_pylist()

    def error(self, path: Path, total: int) -> InputError:
        parts = []
        for (col, problem), (n, ids, values) in self.issues.items():
            shown = list(dict.fromkeys(v for v in values if v is not None))[:3]
            noun = "value" if len(shown) == 1 else "values"
            quoted = f" ({noun}: {', '.join(shown)})" if shown else ""
            parts.append(f"{col} {problem} in {format_rows(ids, n)}{quoted}")
        topics = dict.fromkeys(contract.hint(col) for col, _ in self.issues)
        hints = " ".join(t for t in topics if t)
        (column, _), (_, first_ids, _) = next(iter(self.issues.items()))
        return InputError(
            f"{path}: {self.bad_rows} of {total} rows are invalid: {'; '.join(parts)}. {hints} "
            "Fix these rows, or run with --on-bad-rows=skip to write them, with a reject_reason "
            "column, to a rejects file next to the output and go on with the rest.",
            path=path,
            column=column,
            row_ids=first_ids,
            row_count=self.bad_rows,
        )
