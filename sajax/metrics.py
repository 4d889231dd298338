"""SLO metrics: the one definition used for predictions (sajax) and measurements (batch_runner).

All times are relative to the job start t0 (offline: every request is available at t0)::

    e2e_i  = finish_i - t0
    ttft_i = first_token_i - t0
    tpot_i = (finish_i - first_token_i) / (out_i - 1)      (0 when out_i <= 1)
    met_i  = e2e_i <= slo_e2e_i  and  ttft_i <= slo_ttft_i  and  tpot_i <= slo_tpot_i
    attainment = sum(w_i * met_i) / sum(w_i)      over rows that have at least one SLO
    G          = sum(w_i * met_i) / sum(e2e_i in seconds)      (the paper's n / t, weighted)

Weighted sums never overflow with NumPy arrays: weights are float64 there and are divided by
the largest before summing (attainment is a ratio; G is multiplied back). With JAX (the planner)
they are float32 as given: the request contract keeps weights within 1e-6..1e6, so every sum
stays finite.

A missing SLO is ``inf`` (NaN is accepted too and treated as missing), so the comparison for it
always holds. A row with no SLO at all is best-effort: it counts in latency (and in G's
denominator) but not in attainment. Padding rows (``mask == False``) count nowhere.

The functions take an array namespace ``xp`` (``numpy`` or ``jax.numpy``) so that the planner
can call them inside ``jit`` and the job runner on measured NumPy arrays::

    m = slo_metrics(first_ms, finish_ms, out_tokens, slo_e2e, slo_ttft, slo_tpot)
    attainment(m.met, m.has_slo, weight), goodput(m.met, m.has_slo, m.e2e_ms, weight)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class SloMetrics(NamedTuple):
    ttft_ms: Any  # (n,) float, time to first token from t0
    tpot_ms: Any  # (n,) float, mean time per output token after the first
    e2e_ms: Any  # (n,) float, finish time from t0
    met: Any  # (n,) bool, every SLO given for the row holds
    has_slo: Any  # (n,) bool, the row has at least one SLO


def _missing_to_inf(slo, xp):
    slo = xp.asarray(slo, dtype=xp.float32)
    return xp.where(xp.isnan(slo), xp.inf, slo)


def slo_metrics(
    first_token_ms, finish_ms, output_tokens, slo_e2e_ms, slo_ttft_ms, slo_tpot_ms, xp=np
) -> SloMetrics:
    """Per-request TTFT, TPOT, e2e (ms from t0) and whether each request met its SLOs."""
    first = xp.asarray(first_token_ms, dtype=xp.float32)
    finish = xp.asarray(finish_ms, dtype=xp.float32)
    out = xp.asarray(output_tokens, dtype=xp.float32)
    decode_tokens = xp.maximum(out - 1.0, 1.0)
    tpot = xp.where(out > 1.0, (finish - first) / decode_tokens, 0.0)
    e2e_slo = _missing_to_inf(slo_e2e_ms, xp)
    ttft_slo = _missing_to_inf(slo_ttft_ms, xp)
    tpot_slo = _missing_to_inf(slo_tpot_ms, xp)
    met = (finish <= e2e_slo) & (first <= ttft_slo) & (tpot <= tpot_slo)
    has_slo = xp.isfinite(e2e_slo) | xp.isfinite(ttft_slo) | xp.isfinite(tpot_slo)
    return SloMetrics(ttft_ms=first, tpot_ms=tpot, e2e_ms=finish, met=met, has_slo=has_slo)


def problem_metrics(first_token_ms, finish_ms, problem, xp=np) -> SloMetrics:
    """``slo_metrics`` of timings against a ``sajax.Problem``'s output lengths and SLOs."""
    return slo_metrics(
        first_token_ms,
        finish_ms,
        problem.output_len,
        problem.slo_e2e_ms,
        problem.slo_ttft_ms,
        problem.slo_tpot_ms,
        xp=xp,
    )


def attainment(met, has_slo, weight=None, mask=None, xp=np):
    """Weighted share of rows with an SLO that met it; 1.0 when no row has an SLO."""
    w = _weights(met, weight, mask, xp)
    w = w * xp.asarray(has_slo, dtype=w.dtype)
    w, _ = _unit_scale(w, xp)
    total = xp.sum(w)
    hit = xp.sum(w * xp.asarray(met, dtype=w.dtype))
    return xp.where(total > 0, hit / xp.maximum(total, 1e-30), 1.0)


def goodput(met, has_slo, e2e_ms, weight=None, mask=None, xp=np):
    """The paper's G = n / t: weighted SLO hits per second of summed request latency."""
    w = _weights(met, weight, mask, xp)
    live = xp.asarray(w > 0, dtype=xp.float32)
    w, scale = _unit_scale(w, xp)
    hits = xp.sum(w * xp.asarray(met, dtype=w.dtype) * xp.asarray(has_slo, dtype=w.dtype))
    total_s = xp.sum(live * xp.asarray(e2e_ms, dtype=xp.float32)) / 1000.0
    per_s = hits / xp.maximum(total_s, 1e-30)
    if xp is np:
        per_s = per_s * scale
    return xp.where(total_s > 0, per_s, 0.0)


def _weights(like, weight, mask, xp):
    """Weights as float32 (float64 for NumPy: a weight of 1e300 must not become inf)."""
    dtype = np.float64 if xp is np else xp.float32
    w = xp.ones(xp.shape(like), dtype=dtype) if weight is None else xp.asarray(weight, dtype=dtype)
    if mask is not None:
        w = w * xp.asarray(mask, dtype=dtype)
    return w


def _unit_scale(w, xp):
    """NumPy: ``(w / max(w), max(w))``, so that sums of any finite weights stay finite (the
    ratios are the same); JAX (inside the planner): ``(w, 1)`` as they are, no extra work."""
    if xp is not np:
        return w, 1.0
    top = float(np.max(w, initial=0.0))
    if not np.isfinite(top) or top <= 0.0:
        return w, 1.0
    return w / top, top
