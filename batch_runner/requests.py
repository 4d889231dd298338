"""The request file: read, validate and normalize a Parquet file of requests, batch by batch.

One row is one request. ``read_requests`` returns the *normalized request table*, the contract
between reading, planning, executing and writing: the columns below, in this order and with these
types, followed by every other input column unchanged, in input row order.

======================  ====================================  =====================================
column                  type                                  when the row leaves it empty (null)
======================  ====================================  =====================================
id                      string, unique                        the row number ("0", "1", ...)
prompt                  string                                fine if ``messages`` is given
messages                list<struct<role, content: string>>  fine if ``prompt`` is given
task                    string                                "default"
max_new_tokens          int64 > 0                             task preset, else 256
slo_e2e_ms/_ttft/_tpot  float64 >= 0, finite (ms)             task preset, else null (= no SLO)
weight                  float64 > 0, finite                   1.0
output_tokens_hint      int64 >= 0                            null (= predict it)
ignore_eos              bool                                  False
======================  ====================================  =====================================

Two kinds of problems. A *column* problem (no prompt and no messages column, a column of the wrong
type such as an integer prompt or a string SLO, an empty or unreadable file) makes the whole file
unusable: ``InputError``, whatever ``on_bad_rows`` says. A *row* problem (null or duplicate id,
empty prompt, NaN / infinite / negative SLO, ...) is either an ``InputError`` that names the
column and the first few row ids (``on_bad_rows="error"``), or sets the row aside in
``RequestFile.rejects``: the row's input columns plus ``reject_row`` (0-based row number) and
``reject_reason`` (``on_bad_rows="skip"``). Either way no row is lost:
``table.num_rows + rejects.num_rows`` is the input's row count.

Validation is column-wise with ``pyarrow.compute`` on record batches; no row becomes a Python
object except the few named in a message. Duplicate ids are found in a first pass over the ``id``
column alone. Very long texts are allowed up to ``MAX_TEXT_BYTES`` (16 MiB, far beyond any
model's context); a longer prompt (or messages content, summed) is a row problem, since no engine
can take it and it is almost certainly a broken export::

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

from batch_runner.errors import InputError, format_rows
from batch_runner.parquet_io import DEFAULT_BATCH_ROWS, iter_batches, open_parquet
from batch_runner.presets import SloPresets, TaskPreset, load_presets

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)
SLO_COLUMNS = ("slo_e2e_ms", "slo_ttft_ms", "slo_tpot_ms")
NORMALIZED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("messages", MESSAGES_TYPE),
        ("task", pa.string()),
        ("max_new_tokens", pa.int64()),
        *[(name, pa.float64()) for name in SLO_COLUMNS],
        ("weight", pa.float64()),
        ("output_tokens_hint", pa.int64()),
        ("ignore_eos", pa.bool_()),
    ]
)
NORMALIZED_COLUMNS = tuple(NORMALIZED_SCHEMA.names)
REJECT_COLUMNS = ("reject_row", "reject_reason")

DEFAULT_TASK = "default"
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_WEIGHT = 1.0
MAX_TEXT_BYTES = 16 * 1024 * 1024

OnBadRows = Literal["error", "skip"]


class RequestFile(NamedTuple):
    table: pa.Table  # the normalized request table (valid rows, input order)
    rejects: pa.Table | None  # input columns + reject_row + reject_reason; None if no bad row
    source: Path  # the file read

    @property
    def num_input_rows(self) -> int:
        return self.table.num_rows + (0 if self.rejects is None else self.rejects.num_rows)


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
    _check_schema(schema, path)
    if parquet.metadata.num_rows == 0:
        raise InputError(
            f"{path} has no rows (columns: {', '.join(schema.names) or 'none'}); "
            "there is nothing to run.",
            path=path,
        )
    duplicates = _duplicate_ids(path, schema, batch_size)
    carried = [f for f in schema if f.name not in NORMALIZED_COLUMNS]
    out_schema = pa.schema([*NORMALIZED_SCHEMA, *carried])
    reject_schema = pa.schema(
        [f for f in schema if f.name not in REJECT_COLUMNS]
        + [pa.field("reject_row", pa.int64()), pa.field("reject_reason", pa.string())]
    )

    log = _IssueLog()
    good: list[pa.RecordBatch] = []
    bad: list[pa.RecordBatch] = []
    row0 = 0  # the input row number of the batch's first row
    for batch in iter_batches(path, batch_size=batch_size):
        ids, checks, columns = _validate(batch, row0, duplicates)
        bad_mask = np.zeros(batch.num_rows, dtype=bool)
        for column, problem, mask in checks:
            if mask.any():
                log.add(column, problem, mask, ids, row0)
                bad_mask |= mask
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
    return RequestFile(table=table, rejects=rejects, source=path)


# --- schema --------------------------------------------------------------------------------

_ACCEPTED = {  # column -> kinds of Arrow type it may have (after dictionary decoding)
    "id": ("string", "integer"),
    "prompt": ("string", "null"),
    "messages": ("messages", "null"),
    "task": ("string", "null"),
    "max_new_tokens": ("integer", "null"),
    **{name: ("integer", "float", "null") for name in SLO_COLUMNS},
    "weight": ("integer", "float", "null"),
    "output_tokens_hint": ("integer", "null"),
    "ignore_eos": ("bool", "null"),
}
_EXPECTED = {  # what to tell the user a column should be
    "id": "string or integer",
    "prompt": "string",
    "messages": "list of struct<role: string, content: string> (exactly these two fields)",
    "task": "string",
    "max_new_tokens": "integer (pandas: .astype('Int64'))",
    **{name: "float or integer, milliseconds" for name in SLO_COLUMNS},
    "weight": "float or integer",
    "output_tokens_hint": "integer (pandas: .astype('Int64'))",
    "ignore_eos": "bool",
}


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):
        return "null"
    if _is_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_message(t.value_type):
        return "messages"
    return "other"


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_message(t: pa.DataType) -> bool:
    if not pa.types.is_struct(t) or t.num_fields != 2:
        return False
    fields = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
    return set(fields) == {"role", "content"} and all(_is_string(x) for x in fields.values())


def _check_schema(schema: pa.Schema, path: Path) -> None:
    names = schema.names
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(
            f"{path} has more than one column named {', '.join(map(repr, repeated))}; "
            "column names must be unique.",
            path=path,
            column=repeated[0],
        )
    if "prompt" not in names and "messages" not in names:
        raise InputError(
            f"{path} has neither a 'prompt' nor a 'messages' column (it has: "
            f"{', '.join(names) or 'no columns'}); every request needs a prompt (string) or "
            "messages (list of {role, content}). Column names are case-sensitive.",
            path=path,
            column="prompt",
        )
    wrong = [
        (f.name, f.type)
        for f in schema
        if f.name in _ACCEPTED and _kind(f.type) not in _ACCEPTED[f.name]
    ]
    if wrong:
        detail = "; ".join(
            f"column '{name}' is {t}, expected {_EXPECTED[name]}" for name, t in wrong
        )
        raise InputError(
            f"{path} has columns of the wrong type: {detail}. This is a problem of the whole "
            "column, so --on-bad-rows=skip cannot set rows aside; convert the column and write "
            "the file again.",
            path=path,
            column=wrong[0][0],
        )


# --- rows ----------------------------------------------------------------------------------

_HINTS = {
    "id": "Ids must be non-null and unique (leave out the id column to number the rows).",
    "prompt": "Every row needs a non-empty prompt or a non-empty messages list.",
    "messages": "Messages are a non-empty list of {role, content}, none of them null.",
    "task": "A task is a non-empty name (leave it null for 'default').",
    "max_new_tokens": "max_new_tokens must be > 0 (leave it null for the task's preset).",
    "slo": "SLOs are milliseconds, finite and >= 0; leave a cell null for no such SLO.",
    "weight": "Weights must be finite and > 0 (leave it null for 1.0).",
    "output_tokens_hint": "output_tokens_hint must be >= 0 (leave it null to predict it).",
}

Check = tuple[str, str, np.ndarray]  # (column, problem, (n,) bool mask of rows that have it)


def _validate(
    batch: pa.RecordBatch, row0: int, duplicates: pa.Array
) -> tuple[pa.Array, list[Check], dict[str, pa.Array]]:
    """Row ids, the row problems found, and every normalized column (bad rows included)."""
    n = batch.num_rows
    checks: list[Check] = []

    def check(column: str, problem: str, mask: pa.Array | np.ndarray) -> None:
        if isinstance(mask, pa.Array | pa.ChunkedArray):
            mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
        checks.append((column, problem, np.asarray(mask, dtype=bool)))

    def raw(name: str, target: pa.DataType) -> pa.Array | None:
        if name not in batch.schema.names:
            return None
        arr = batch.column(name)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        return pa.nulls(n, target) if pa.types.is_null(arr.type) else arr

    if "id" in batch.schema.names:
        ids = raw("id", pa.string()).cast(pa.string())
        check("id", "is null", ids.is_null())
        if len(duplicates):
            check("id", "is not unique", pc.is_in(ids, value_set=duplicates))
    else:
        ids = pa.array(np.arange(row0, row0 + n)).cast(pa.string())

    prompt = raw("prompt", pa.string())
    prompt = pa.nulls(n, pa.string()) if prompt is None else prompt.cast(pa.string())
    check("prompt", "is an empty string", pc.equal(prompt, ""))
    check("prompt", f"is longer than {MAX_TEXT_BYTES} bytes", _too_long(prompt))

    messages = raw("messages", MESSAGES_TYPE)
    messages = pa.nulls(n, MESSAGES_TYPE) if messages is None else messages.cast(MESSAGES_TYPE)
    check("messages", "is an empty list", pc.equal(pc.list_value_length(messages), 0))
    flat = pc.list_flatten(messages)
    parents = pc.list_parent_indices(messages).to_numpy(zero_copy_only=False)
    role, content = pc.struct_field(flat, "role"), pc.struct_field(flat, "content")
    broken = pc.or_(pc.or_(flat.is_null(), role.is_null()), content.is_null())
    broken_rows = np.zeros(n, dtype=bool)
    broken_rows[parents[broken.to_numpy(zero_copy_only=False)]] = True
    check("messages", "has a null message, role or content", broken_rows)
    content_bytes = pc.fill_null(pc.binary_length(content), 0).to_numpy(zero_copy_only=False)
    per_row = np.bincount(parents, weights=content_bytes, minlength=n)
    check("messages", f"content is longer than {MAX_TEXT_BYTES} bytes", per_row > MAX_TEXT_BYTES)

    neither = pc.and_(prompt.is_null(), messages.is_null())
    if "prompt" in batch.schema.names:
        check("prompt", "is missing (prompt and messages are both null)", neither)
    else:
        check("messages", "is null", neither)

    task = raw("task", pa.string())
    task = pa.nulls(n, pa.string()) if task is None else task.cast(pa.string())
    check("task", "is an empty string", pc.equal(task, ""))

    max_new = _int64(raw("max_new_tokens", pa.int64()), n, "max_new_tokens", check)
    check("max_new_tokens", "is 0 or negative", pc.less_equal(max_new, 0))
    hint = _int64(raw("output_tokens_hint", pa.int64()), n, "output_tokens_hint", check)
    check("output_tokens_hint", "is negative", pc.less(hint, 0))

    columns = {
        "id": ids,
        "prompt": prompt,
        "messages": messages,
        "task": task,
        "max_new_tokens": max_new,
        "output_tokens_hint": hint,
    }
    for name in (*SLO_COLUMNS, "weight"):
        arr = _float64(raw(name, pa.float64()), n)
        check(name, "is NaN", pc.is_nan(arr))
        check(name, "is infinite", pc.is_inf(arr))
        if name == "weight":
            check(name, "is 0 or negative", pc.less_equal(arr, 0.0))
        else:
            check(name, "is negative", pc.less(arr, 0.0))
        columns[name] = arr
    ignore_eos = raw("ignore_eos", pa.bool_())
    columns["ignore_eos"] = pa.nulls(n, pa.bool_()) if ignore_eos is None else ignore_eos
    return ids, checks, columns


def _too_long(strings: pa.Array) -> pa.Array:
    return pc.greater(pc.binary_length(strings), MAX_TEXT_BYTES)


def _int64(arr: pa.Array | None, n: int, name: str, check) -> pa.Array:
    if arr is None:
        return pa.nulls(n, pa.int64())
    if arr.type == pa.uint64():
        too_big = pc.greater(arr, pa.scalar(np.iinfo(np.int64).max, pa.uint64()))
        check(name, "is larger than 2**63 - 1", too_big)
        arr = pc.if_else(too_big, pa.scalar(None, arr.type), arr)
    return arr.cast(pa.int64())


def _float64(arr: pa.Array | None, n: int) -> pa.Array:
    if arr is None:
        return pa.nulls(n, pa.float64())
    return arr.cast(pa.float64(), safe=False)  # int -> float may round beyond 2**53: fine for ms


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
    normalized = _fill_defaults({k: pc.filter(v, keep) for k, v in columns.items()}, presets)
    return pa.RecordBatch.from_arrays(
        [normalized[name] for name in NORMALIZED_COLUMNS]
        + [pc.filter(batch.column(f.name), keep) for f in carried],
        schema=schema,
    )


def _fill_defaults(
    columns: dict[str, pa.Array], presets: tuple[pa.Array, dict[str, pa.Array]] | None
) -> dict[str, pa.Array]:
    """Row value, else the task's preset, else the built-in default (see the module table)."""
    out = dict(columns)
    out["task"] = pc.fill_null(columns["task"], DEFAULT_TASK)
    if presets is not None:
        names, values = presets
        index = pc.index_in(out["task"], value_set=names)
        for field, per_task in values.items():
            out[field] = pc.coalesce(out[field], per_task.take(index))
    out["max_new_tokens"] = pc.fill_null(out["max_new_tokens"], DEFAULT_MAX_NEW_TOKENS)
    out["weight"] = pc.fill_null(out["weight"], DEFAULT_WEIGHT)
    out["ignore_eos"] = pc.fill_null(out["ignore_eos"], False)
    return out


def _preset_table(
    slo_config: SloPresets | Mapping[str, TaskPreset] | str | Path | None,
) -> tuple[pa.Array, dict[str, pa.Array]] | None:
    """Presets as columns: task names, and per field an array aligned with them."""
    if slo_config is None:
        return None
    if isinstance(slo_config, str | Path):
        slo_config = load_presets(slo_config)
    tasks = slo_config.tasks if isinstance(slo_config, SloPresets) else slo_config
    if not tasks:
        return None
    names = pa.array(list(tasks), type=pa.string())
    values = {
        field: pa.array(
            [getattr(p, field) for p in tasks.values()], type=NORMALIZED_SCHEMA.field(field).type
        )
        for field in (*SLO_COLUMNS, "max_new_tokens")
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
    reasons = [
        pc.if_else(pa.array(mask[rows]), f"{column} {problem}", pa.scalar(None, pa.string()))
        for column, problem, mask in checks
        if mask[rows].any()
    ]
    reason = pc.binary_join_element_wise(*reasons, "; ", null_handling="skip")
    kept = [batch.column(f.name).take(take) for f in schema if f.name not in REJECT_COLUMNS]
    return pa.RecordBatch.from_arrays(
        [*kept, pa.array(rows + row0, type=pa.int64()), reason], schema=schema
    )


class _IssueLog:
    """Counts and first few row ids per (column, problem), across batches, for the message."""

    limit = 5

    def __init__(self) -> None:
        self.issues: dict[tuple[str, str], list] = {}  # -> [count, [row labels]]
        self.bad_rows = 0

    def add(self, column: str, problem: str, mask: np.ndarray, ids: pa.Array, row0: int) -> None:
        entry = self.issues.setdefault((column, problem), [0, []])
        entry[0] += int(mask.sum())
        need = self.limit - len(entry[1])
        if need > 0:
            rows = np.flatnonzero(mask)[:need]
            for row, label in zip(rows, ids.take(pa.array(rows)).to_pylist(), strict=True):
                entry[1].append(label if label is not None else f"row {row0 + int(row)}")

    def error(self, path: Path, total: int) -> InputError:
        parts = [
            f"{col} {problem} in {format_rows(ids, n)}"
            for (col, problem), (n, ids) in self.issues.items()
        ]
        topics = dict.fromkeys("slo" if col.startswith("slo_") else col for col, _ in self.issues)
        hints = " ".join(_HINTS[t] for t in topics if t in _HINTS)
        (column, _), (_, first_ids) = next(iter(self.issues.items()))
        return InputError(
            f"{path}: {self.bad_rows} of {total} rows are invalid: {'; '.join(parts)}. {hints} "
            "Fix these rows, or run with --on-bad-rows=skip to write them, with a reject_reason "
            "column, to a rejects file next to the output and go on with the rest.",
            path=path,
            column=column,
            row_ids=first_ids,
            row_count=self.bad_rows,
        )
