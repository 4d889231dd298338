"""The engine model's fit: (a, b, c, d) of ``t_iter = a + b * fwd + c * context + d * sampled``.

From iterations (an engine's ``iteration_log``), by non-negative least squares on relative
error with a robust refit::

    1000 * seconds_k  ~=  a_ms + b_ms * (decode_k + prefill_k) + c_ms * context_k + d_ms * sampled_k

``sampled_k`` are the rows that produced a token (decoders, prompts completed): what a decode
token costs beyond a prompt token (the output layer and the sampling). Where every iteration
samples as many rows as it decodes, d cannot be told apart from b (the fit then leaves one at 0).

From per-request times of an offline job (every request at t0, admitted in rank order as slots
free up): the schedule of a continuous-batching engine does not depend on its speed, so each
request's first-token and finish times are *linear* in (a, b, c, d)::

    finish_i = a * N_i + b * F_i + c * C_i + d * S_i

with N_i, F_i, C_i, S_i the iterations, forward tokens, context tokens and sampled rows summed up
to the iteration that finishes i; ``schedule_basis`` gets those four columns exactly from
``sajax.refsim`` (one run per unit cost).

    fit = fit_from_iteration_log(engine.iteration_log)
    fit.a_ms, fit.b_ms, fit.c_ms, fit.d_ms, fit.mean_abs_rel_error
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class IterationFit(NamedTuple):
    a_ms: float  # fixed cost per iteration
    b_ms: float  # cost per forward token
    c_ms: float  # cost per context token
    rows: int  # observations fitted (iterations, or request times)
    rmse_ms: float  # root mean square residual
    mean_abs_rel_error: float  # mean |residual| / observed
    r2: float  # coefficient of determination (over the rows kept)
    outliers: int = 0  # rows dropped by the robust fit (e.g. iterations slowed by other load)
    d_ms: float = 0.0  # cost per sampled row (logits + sampling)


def nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin_{beta >= 0} ||x beta - y||^2 for a few columns, exactly: the best of the
    unconstrained least-squares solutions on every subset of columns that is feasible."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    k = x.shape[1]
    best, best_cost = np.zeros(k), float(np.sum(y**2))
    for r in range(1, k + 1):
        for cols in itertools.combinations(range(k), r):
            beta, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if np.any(beta < 0):
                continue
            cost = float(np.sum((x[:, cols] @ beta - y) ** 2))
            if cost < best_cost - 1e-12 * max(1.0, best_cost):
                best = np.zeros(k)
                best[list(cols)] = beta
                best_cost = cost
    return best


def fit_iteration_model(
    decode_tokens,
    prefill_tokens,
    context_tokens,
    seconds,
    *,
    sampled_rows=None,
    with_context: bool = True,
    robust: bool = True,
) -> IterationFit:
    """Fit ``1000 * seconds ~= a + b * (decode + prefill) + c * context + d * sampled``
    (a, b, c, d >= 0; d = 0 without ``sampled_rows``).

    The fit minimises *relative* squared error (rows weighted by 1 / observed time): iteration
    times span 5 ms decodes to 1 s prefills and their noise is roughly proportional, so plain
    least squares would fit the prefills alone. ``robust``: refit without the iterations whose
    relative residual is beyond 4 robust standard deviations (1.4826 * MAD, at least 10%), twice:
    on a shared machine some iterations are stalled by other processes, and least squares
    would spread their delay over a, b and c."""
    forward = np.asarray(decode_tokens, np.float64) + np.asarray(prefill_tokens, np.float64)
    context = np.asarray(context_tokens, np.float64)
    y = 1000.0 * np.asarray(seconds, np.float64)
    sampled = np.zeros_like(forward) if sampled_rows is None else np.asarray(sampled_rows, float)
    basis = [np.ones_like(forward), forward, context if with_context else 0 * context, sampled]
    x = np.stack(basis, axis=1)
    w = 1.0 / np.maximum(y, 1e-6)
    keep = np.ones(y.size, bool)
    for _ in range(2 if robust else 0):
        beta = nonnegative_lstsq(x[keep] * w[keep, None], y[keep] * w[keep])
        rel = (x @ beta - y) * w
        center = np.median(rel[keep])
        scale = max(1.4826 * np.median(np.abs(rel[keep] - center)), 0.025)
        keep = np.abs(rel - center) <= 4 * scale
    return _fit(x[keep], y[keep], relative=True)._replace(outliers=int((~keep).sum()))


def fit_from_iteration_log(records: Sequence[Any], **kw) -> IterationFit:
    """``fit_iteration_model`` over ``IterationRecord`` s (idle records are skipped)."""
    rec = [r for r in records if r.decode_tokens + r.prefill_tokens > 0]
    if len(rec) < 3:
        raise ValueError(f"need at least 3 iterations to fit 3 parameters, got {len(rec)}")
    return fit_iteration_model(
        [r.decode_tokens for r in rec],
        [r.prefill_tokens for r in rec],
        [r.context_tokens for r in rec],
        [r.seconds for r in rec],
        sampled_rows=[r.sampled_rows for r in rec],
        **kw,
    )


def schedule_basis(order, input_len, output_len, *, slots: int, token_budget: int):
    """(N, F, C, S) per request for first token and finish: (n, 4) arrays each, so that
    ``first = basis_first @ (a, b, c, d)`` and ``finish = basis_finish @ (a, b, c, d)``."""
    from sajax.refsim import reference_simulate

    first, finish = [], []
    for unit in np.eye(4):
        model = _UnitModel(slots, token_budget, *unit)
        t = reference_simulate(order, input_len, output_len, model)
        first.append(t.first_token_ms)
        finish.append(t.finish_ms)
    return np.stack(first, axis=1), np.stack(finish, axis=1)


def fit_from_request_times(
    order, input_len, output_len, first_ms, finish_ms, *, slots: int, token_budget: int
) -> IterationFit:
    """Fit (a, b, c, d) to measured per-request first-token and finish times (module doc)."""
    basis_first, basis_finish = schedule_basis(
        order, input_len, output_len, slots=slots, token_budget=token_budget
    )
    order = np.asarray(order, np.int64)
    x = np.concatenate([basis_first[order], basis_finish[order]])
    y = np.concatenate([np.asarray(first_ms, float)[order], np.asarray(finish_ms, float)[order]])
    ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
    if ok.sum() < 3:
        raise ValueError("need timings of at least 2 requests to fit the engine model")
    return _fit(x[ok], y[ok])


def _fit(x: np.ndarray, y: np.ndarray, relative: bool = False) -> IterationFit:
    w = 1.0 / np.maximum(np.abs(y), 1e-6) if relative else np.ones_like(y)
    beta = nonnegative_lstsq(x * w[:, None], y * w)
    pred = x @ beta
    resid = pred - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    coef = list(beta) + [0.0] * (4 - len(beta))
    return IterationFit(
        a_ms=float(coef[0]),
        b_ms=float(coef[1]),
        c_ms=float(coef[2]),
        d_ms=float(coef[3]),
        rows=int(y.size),
        rmse_ms=float(np.sqrt(np.mean(resid**2))),
        mean_abs_rel_error=float(np.mean(np.abs(resid) / np.maximum(np.abs(y), 1e-9))),
        r2=float(1.0 - np.sum(resid**2) / ss_tot) if ss_tot > 0 else float("nan"),
    )


class _UnitModel(NamedTuple):
    slots: int
    token_budget: int
    a_ms: float
    b_ms: float
    c_ms: float
    d_ms: float
    kv_capacity: int = 0
