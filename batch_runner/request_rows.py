"""The row half of the request contract (``batch_runner.request_contract``), column-wise.

``validate_batch`` finds every row problem of one record batch with ``pyarrow.compute`` and
returns the normalized columns (bad rows included; the caller drops them); ``fill_defaults``
fills what a row leaves empty. A problem is a ``Check``: the column, what is wrong, a mask of
the rows that have it and, for a value out of range or a chat role, the offending value per
row, which the error message and the rejects file's ``reject_reason`` quote::

    ids, checks, columns = validate_batch(batch, row0=0, duplicates=pa.array([], pa.string()))
    bad = np.logical_or.reduce([c.mask for c in checks])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_runner import request_contract as contract
from batch_runner.request_contract import MESSAGES_TYPE, RANGES, SLO_COLUMNS


class Check(NamedTuple):
    column: str
    problem: str
    mask: np.ndarray  # (n,) bool, the rows that have the problem
    values: pa.Array | None = None  # (n,) the offending value per row, to quote; None: none


def validate_batch(
    batch: pa.RecordBatch, row0: int, duplicates: pa.Array
) -> tuple[pa.Array, list[Check], dict[str, pa.Array]]:
    """Row ids, the row problems found, and every normalized column (bad rows included)."""
    n = batch.num_rows
    checks: list[Check] = []

    def check(column: str, problem: str, mask, values: pa.Array | None = None) -> None:
        if isinstance(mask, pa.Array | pa.ChunkedArray):
            mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
        checks.append(Check(column, problem, np.asarray(mask, dtype=bool), values))

    def raw(name: str, target: pa.DataType) -> pa.Array | None:
        if name not in batch.schema.names:
            return None
        arr = batch.column(name)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        return pa.nulls(n, target) if pa.types.is_null(arr.type) else arr

    def string(name: str) -> pa.Array:
        arr = raw(name, pa.string())
        return pa.nulls(n, pa.string()) if arr is None else arr.cast(pa.string())

    if "id" in batch.schema.names:
        ids = raw("id", pa.string()).cast(pa.string())
        check("id", "is null", ids.is_null())
        if len(duplicates):
            check("id", "is not unique", pc.is_in(ids, value_set=duplicates))
    else:
        ids = pa.array(np.arange(row0, row0 + n)).cast(pa.string())

    prompt = string("prompt")
    check("prompt", "is an empty string", pc.equal(prompt, ""))
    check("prompt", f"is longer than {contract.MAX_TEXT_BYTES} bytes", _too_long(prompt))

    messages = raw("messages", MESSAGES_TYPE)
    messages = pa.nulls(n, MESSAGES_TYPE) if messages is None else messages.cast(MESSAGES_TYPE)
    _check_messages(messages, n, check)

    neither = pc.and_(prompt.is_null(), messages.is_null())
    if "prompt" in batch.schema.names:
        check("prompt", "is missing (prompt and messages are both null)", neither)
    else:
        check("messages", "is null", neither)
    both = pc.and_(prompt.is_valid(), messages.is_valid())
    check("messages", "is set together with prompt (a row gives one of them)", both)

    task = string("task")
    check("task", "is an empty string", pc.equal(task, ""))

    columns = {"id": ids, "prompt": prompt, "messages": messages, "task": task}
    for name in ("max_new_tokens", "output_tokens_hint"):
        columns[name] = _in_range_int64(raw(name, pa.int64()), n, name, check)
    for name in (*SLO_COLUMNS, "weight"):
        arr = _float64(raw(name, pa.float64()), n)
        check(name, "is NaN", pc.is_nan(arr))
        check(name, "is infinite", pc.is_inf(arr))
        finite = pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, pa.float64()))
        _check_range(finite, name, check)
        columns[name] = arr
    ignore_eos = raw("ignore_eos", pa.bool_())
    columns["ignore_eos"] = pa.nulls(n, pa.bool_()) if ignore_eos is None else ignore_eos
    return ids, checks, columns


def _check_range(arr: pa.Array, name: str, check) -> tuple[pa.Array, pa.Array]:
    """Range checks of one numeric column; returns the (below, above) masks."""
    r = RANGES[name]
    if pa.types.is_integer(arr.type):  # compare in a type both bounds and every value fit in
        bound = pa.uint64() if pa.types.is_unsigned_integer(arr.type) else pa.int64()
        arr = arr.cast(bound)
    else:
        bound = pa.float64()
    below = pc.less(arr, pa.scalar(r.low, bound))
    above = pc.greater(arr, pa.scalar(r.high, bound))
    check(name, r.below(), below, arr)
    check(name, r.above(), above, arr)
    return below, above


def _in_range_int64(arr: pa.Array | None, n: int, name: str, check) -> pa.Array:
    """An integer column as int64; out-of-range values (checked before the cast, so a uint64
    beyond 2**63 - 1 is one of them) are row problems and become null here."""
    if arr is None:
        return pa.nulls(n, pa.int64())
    below, above = _check_range(arr, name, check)
    bad = pc.fill_null(pc.or_(below, above), False)
    return pc.if_else(bad, pa.scalar(None, arr.type), arr).cast(pa.int64())


def _float64(arr: pa.Array | None, n: int) -> pa.Array:
    if arr is None:
        return pa.nulls(n, pa.float64())
    return arr.cast(pa.float64(), safe=False)  # int -> float may round beyond 2**53: fine


def _too_long(strings: pa.Array) -> pa.Array:
    return pc.greater(pc.binary_length(strings), contract.MAX_TEXT_BYTES)


def _check_messages(messages: pa.Array, n: int, check) -> None:
    """The chat rules of the contract, over the flattened messages of the batch."""
    check("messages", "is an empty list", pc.equal(pc.list_value_length(messages), 0))
    flat = pc.list_flatten(messages)
    parents = pc.list_parent_indices(messages).to_numpy(zero_copy_only=False)
    role, content = pc.struct_field(flat, "role"), pc.struct_field(flat, "content")
    broken = pc.or_(pc.or_(flat.is_null(), role.is_null()), content.is_null())
    broken_rows = _rows_with(broken, parents, n)
    check("messages", "has a null message, role or content", broken_rows)
    content_bytes = pc.fill_null(pc.binary_length(content), 0).to_numpy(zero_copy_only=False)
    per_row = np.bincount(parents, weights=content_bytes, minlength=n)
    too_long = per_row > contract.MAX_TEXT_BYTES
    check("messages", f"content is longer than {contract.MAX_TEXT_BYTES} bytes", too_long)

    roles = pa.array(contract.CHAT_ROLES, pa.string())
    unknown = pc.and_(role.is_valid(), pc.invert(pc.is_in(role, value_set=roles)))
    allowed = ", ".join(contract.CHAT_ROLES)
    check(
        "messages",
        f"has a role other than {allowed}",
        _rows_with(unknown, parents, n),
        _first_per_row(role, unknown, parents, n),
    )
    lengths = pc.fill_null(pc.list_value_length(messages), 0).to_numpy(zero_copy_only=False)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(len(parents)) - starts[parents]
    is_system = pc.fill_null(pc.equal(role, "system"), False).to_numpy(zero_copy_only=False)
    late_system = pa.array(is_system & (position > 0))
    check("messages", "has a system message after the first", _rows_with(late_system, parents, n))
    is_user = pc.fill_null(pc.equal(role, "user"), False).to_numpy(zero_copy_only=False)
    has_user = np.bincount(parents, weights=is_user, minlength=n) > 0
    chats = (lengths > 0) & ~broken_rows
    check("messages", "has no user message", chats & ~has_user)
    last = pa.array(starts + lengths - 1, mask=lengths == 0)  # flat index of each row's last
    last_role = pc.take(role, last)
    ends_badly = pc.invert(pc.is_in(last_role, value_set=pa.array(contract.LAST_ROLES)))
    check(
        "messages",
        f"ends with a message that is not {' or '.join(contract.LAST_ROLES)}",
        pc.and_(pa.array(chats), ends_badly),
        last_role,
    )


def _rows_with(flat_mask: pa.Array, parents: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool: the rows that have at least one flattened element in ``flat_mask``."""
    hit = pc.fill_null(flat_mask, False).to_numpy(zero_copy_only=False)
    rows = np.zeros(n, dtype=bool)
    rows[parents[hit]] = True
    return rows


def _first_per_row(values: pa.Array, flat_mask: pa.Array, parents: np.ndarray, n: int):
    """(n,) the first flattened value in ``flat_mask`` of each row (null where none)."""
    hit = np.flatnonzero(pc.fill_null(flat_mask, False).to_numpy(zero_copy_only=False))
    index = np.zeros(n, dtype=np.int64)
    rows, first = np.unique(parents[hit], return_index=True)
    index[rows] = hit[first]
    missing = np.ones(n, dtype=bool)
    missing[rows] = False
    return pc.take(values, pa.array(index, mask=missing)) if len(hit) else pa.nulls(n, values.type)


def fill_defaults(
    columns: dict[str, pa.Array], presets: tuple[pa.Array, dict[str, pa.Array]] | None
) -> dict[str, pa.Array]:
    """Row value, else the task's preset, else the built-in default (see the contract)."""
    out = dict(columns)
    out["task"] = pc.fill_null(columns["task"], contract.DEFAULT_TASK)
    if presets is not None:
        names, values = presets
        index = pc.index_in(out["task"], value_set=names)
        for field, per_task in values.items():
            out[field] = pc.coalesce(out[field], per_task.take(index))
    out["max_new_tokens"] = pc.fill_null(out["max_new_tokens"], contract.DEFAULT_MAX_NEW_TOKENS)
    out["weight"] = pc.fill_null(out["weight"], contract.DEFAULT_WEIGHT)
    out["ignore_eos"] = pc.fill_null(out["ignore_eos"], False)
    return out
