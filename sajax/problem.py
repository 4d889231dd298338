"""`Problem`: one batch job as padded arrays, the planner's input.

Requests are padded to a size bucket (``bucket_size``) with ``mask == False`` rows so that a new
file of similar size reuses the compiled planner. Bucket sizes are ``m * 2**e`` with
``m in {8, 10, 12, 14}`` and at least 64 (64, 80, 96, 112, 128, 160, ...): each step is at most
1.25x, so padding wastes under 25 %. Padding rows come last, with ``input_len = output_len = 1``,
no SLO and weight 0. Missing SLOs are ``inf`` (NaN is accepted as missing). Times are ms.

    problem = make_problem(input_len=[12, 300], output_len=[64, 20], slo_e2e_ms=[2000, inf])
    problem.mask.sum()   # 2 real rows of 64
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np

MIN_BUCKET = 64


class Problem(NamedTuple):
    input_len: jax.Array  # (N,) int32, prompt tokens (after the chat template)
    output_len: jax.Array  # (N,) int32, predicted (or known) output tokens, >= 1
    slo_e2e_ms: jax.Array  # (N,) float32, end-to-end bound; inf = none
    slo_ttft_ms: jax.Array  # (N,) float32, time-to-first-token bound; inf = none
    slo_tpot_ms: jax.Array  # (N,) float32, time-per-output-token bound; inf = none
    weight: jax.Array  # (N,) float32, > 0 for real rows
    mask: jax.Array  # (N,) bool, False for padding rows


def bucket_size(n: int, minimum: int = MIN_BUCKET) -> int:
    """The smallest ``m * 2**e >= max(n, minimum)`` with ``m in {8, 10, 12, 14}``."""
    n = max(int(n), int(minimum), 1)
    if n <= 8:
        return n
    e = max(0, math.floor(math.log2(n)) - 3)
    while True:
        for m in (8, 10, 12, 14):
            if m << e >= n:
                return m << e
        e += 1


def make_problem(
    input_len,
    output_len,
    slo_e2e_ms=None,
    slo_ttft_ms=None,
    slo_tpot_ms=None,
    weight=None,
    *,
    size: int | None = None,
) -> Problem:
    """A padded ``Problem`` (NumPy arrays) from per-request columns.

    ``size`` fixes the padded length (default ``bucket_size(n)``). Missing SLO columns, ``None``
    entries and NaN mean "no SLO" (stored as ``inf``). Raises ``ValueError`` naming the column
    and rows for lengths < 1, negative SLOs and weights <= 0.
    """
    inp = _column("input_len", input_len, None, np.float64)
    n = len(inp)
    out = _column("output_len", output_len, n, np.float64)
    for name, col in (("input_len", inp), ("output_len", out)):
        bad = np.flatnonzero(~np.isfinite(col) | (col < 1) | (col != np.round(col)))
        if len(bad):
            raise ValueError(f"{name} must be integers >= 1; bad rows {_rows(bad)}")
    slos = {}
    for name, col in (
        ("slo_e2e_ms", slo_e2e_ms),
        ("slo_ttft_ms", slo_ttft_ms),
        ("slo_tpot_ms", slo_tpot_ms),
    ):
        values = np.full(n, np.inf) if col is None else _column(name, col, n, np.float64)
        values = np.where(np.isnan(values), np.inf, values)
        bad = np.flatnonzero(values < 0)
        if len(bad):
            raise ValueError(f"{name} must be >= 0 (or missing); bad rows {_rows(bad)}")
        slos[name] = values
    w = np.ones(n) if weight is None else _column("weight", weight, n, np.float64)
    bad = np.flatnonzero(~np.isfinite(w) | (w <= 0))
    if len(bad):
        raise ValueError(f"weight must be finite and > 0; bad rows {_rows(bad)}")
    size = bucket_size(n) if size is None else int(size)
    if size < n:
        raise ValueError(f"size {size} is smaller than the {n} requests")
    pad = size - n

    def padded(x, fill, dtype):
        return np.concatenate([np.asarray(x, dtype), np.full(pad, fill, dtype)])

    return Problem(
        input_len=padded(inp, 1, np.int32),
        output_len=padded(out, 1, np.int32),
        slo_e2e_ms=padded(slos["slo_e2e_ms"], np.inf, np.float32),
        slo_ttft_ms=padded(slos["slo_ttft_ms"], np.inf, np.float32),
        slo_tpot_ms=padded(slos["slo_tpot_ms"], np.inf, np.float32),
        weight=padded(w, 0.0, np.float32),
        mask=np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]),
    )


def n_requests(problem: Problem) -> int:
    """The number of real (unmasked) rows."""
    return int(np.sum(np.asarray(problem.mask)))


def _column(name, values, n, dtype):
    arr = np.asarray([np.nan if v is None else v for v in values] if _has_none(values) else values)
    try:
        arr = arr.astype(dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} rows, input_len has {n}")
    return arr


def _has_none(values) -> bool:
    return isinstance(values, list | tuple) and any(v is None for v in values)


def _rows(bad: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in bad[:limit])
    return shown + (f" ... ({len(bad)} in all)" if len(bad) > limit else "")
