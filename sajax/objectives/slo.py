"""SLO objectives for the planner: energies (lower is better) computed from predicted timings.

Given per-request times from t0 (``first_token_ms``, ``finish_ms``) and the ``Problem``, the SLO
quantities are the ones of ``sajax.metrics`` (``e2e = finish``, ``ttft = first``,
``tpot = (finish - first) / (out - 1)``). Three objectives:

``goodput`` (the paper's, the default)::

    E = -G = -sum_i w_i * met_i / sum_i e2e_i[s]

``attainment`` (attainment first, mean latency as a tie-break that never outweighs one request)::

    E = -sum_i w_i met_i / sum_i w_i  +  lam * mean_i(e2e_i) / scale_ms,   lam = 0.5 / n_slo

``goodput_window`` (the per-window form of ``goodput`` used by ``sajax.decompose``)::

    E_w = -(sum_{i in w} w_i met_i - G_ref * sum_{i in w} e2e_i[s]) / n_w

``tardiness`` (weighted tardiness, ms; a TPOT excess counts once per decoded token)::

    E = sum_i w_i * ( (e2e_i - slo_e2e_i)^+ + (ttft_i - slo_ttft_i)^+
                      + (out_i - 1) * (tpot_i - slo_tpot_i)^+ ) / sum_i w_i

The search may use a smooth surrogate of ``met_i``: with the relative slack of each given SLO
``r_k = (slo_k - x_k) / slo_k`` the surrogate is ``prod_k sigmoid(r_k / tau)``; ``tau = 0`` is
the exact indicator ``prod_k [x_k <= slo_k]`` (= ``sajax.metrics``'s ``met``). The planner
reports true numbers only (``sajax.metrics`` on the chosen order), never the surrogate.

Padding rows (``mask == False``) count nowhere. Every function takes ``xp`` like
``sajax.metrics`` does, so the same code scores orders inside ``jit`` and in NumPy::

    params = objective_params(tau=0.0)
    energy = OBJECTIVES["goodput"](first_ms, finish_ms, problem, params)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from sajax.metrics import attainment, goodput, problem_metrics


class ObjectiveParams(NamedTuple):
    tau: Any  # () float32, sigmoid width on relative slack; 0 = exact indicator
    scale_ms: Any  # () float32, latency scale of the attainment tie-break (e.g. FCFS makespan)
    g_ref: Any  # () float32, the whole job's G, for the window form of goodput (decompose)


def objective_params(
    tau: float = 0.0, scale_ms: float = 1.0e6, g_ref: float = 0.0
) -> ObjectiveParams:
    """Objective parameters as arrays (a new value does not recompile)."""
    if tau < 0 or not np.isfinite(tau):
        raise ValueError(f"tau must be finite and >= 0, got {tau}")
    if not scale_ms > 0:
        raise ValueError(f"scale_ms must be > 0, got {scale_ms}")
    return ObjectiveParams(np.float32(tau), np.float32(scale_ms), np.float32(g_ref))


def _soft_le(x, slo, tau, xp):
    """Surrogate of ``x <= slo``: sigmoid((slo - x) / slo / tau); exact when tau == 0 or slo inf."""
    slo = xp.where(xp.isnan(slo), xp.inf, slo)
    exact = xp.asarray(x <= slo, dtype=xp.float32)
    finite = xp.isfinite(slo)
    safe_slo = xp.where(finite & (slo > 0), slo, 1.0)
    safe_tau = xp.where(tau > 0, tau, 1.0)
    rel = xp.where(finite, (slo - x) / safe_slo, 0.0)
    soft = 1.0 / (1.0 + xp.exp(-xp.clip(rel / safe_tau, -60.0, 60.0)))
    return xp.where(finite & (tau > 0), soft, exact)


def soft_met(first_ms, finish_ms, problem, tau, xp=jnp):
    """(N,) float32 in [0, 1]: surrogate (tau > 0) or exact (tau == 0) of every SLO holding."""
    m = problem_metrics(first_ms, finish_ms, problem, xp=xp)
    tau = xp.asarray(tau, dtype=xp.float32)
    met = (
        _soft_le(m.e2e_ms, xp.asarray(problem.slo_e2e_ms, xp.float32), tau, xp)
        * _soft_le(m.ttft_ms, xp.asarray(problem.slo_ttft_ms, xp.float32), tau, xp)
        * _soft_le(m.tpot_ms, xp.asarray(problem.slo_tpot_ms, xp.float32), tau, xp)
    )
    return met, m


def goodput_energy(first_ms, finish_ms, problem, params: ObjectiveParams, xp=jnp):
    """-G, the paper's n / t (hits per second of summed latency), surrogate hits when tau > 0."""
    met, m = soft_met(first_ms, finish_ms, problem, params.tau, xp)
    return -goodput(met, m.has_slo, m.e2e_ms, problem.weight, problem.mask, xp=xp)


def goodput_window_energy(first_ms, finish_ms, problem, params: ObjectiveParams, xp=jnp):
    """The window form of -G: -(hits_w - G_ref * t_w) / n_w (see ``sajax.decompose``).

    For a window w of a job whose G is ``G_ref = H / T``, a change of the window's hits and
    summed latency (s) changes the job's G by ``(dH_w - G_ref * dT_w) / T`` to first order, so
    minimising this energy per window improves the job's G.
    """
    met, m = soft_met(first_ms, finish_ms, problem, params.tau, xp)
    w = xp.asarray(problem.weight, xp.float32) * xp.asarray(problem.mask, xp.float32)
    hits = xp.sum(w * met * xp.asarray(m.has_slo, xp.float32))
    live = xp.asarray(w > 0, xp.float32)
    t_s = xp.sum(live * m.e2e_ms) / 1000.0
    return -(hits - params.g_ref * t_s) / xp.maximum(xp.sum(live), 1.0)


def attainment_energy(first_ms, finish_ms, problem, params: ObjectiveParams, xp=jnp):
    """-attainment + a latency tie-break worth less than one request (see module doc)."""
    met, m = soft_met(first_ms, finish_ms, problem, params.tau, xp)
    att = attainment(met, m.has_slo, problem.weight, problem.mask, xp=xp)
    live = xp.asarray(problem.mask, xp.float32) * xp.asarray(
        xp.asarray(problem.weight, xp.float32) > 0, xp.float32
    )
    n_live = xp.maximum(xp.sum(live), 1.0)
    n_slo = xp.maximum(xp.sum(live * xp.asarray(m.has_slo, xp.float32)), 1.0)
    mean_e2e = xp.sum(live * m.e2e_ms) / n_live
    return -att + (0.5 / n_slo) * xp.minimum(mean_e2e / params.scale_ms, 1.0)


def tardiness_energy(first_ms, finish_ms, problem, params: ObjectiveParams, xp=jnp):
    """Weighted mean tardiness in ms over all given SLOs (0 when every SLO holds)."""
    del params
    m = problem_metrics(first_ms, finish_ms, problem, xp=xp)

    def late(x, slo):
        slo = xp.asarray(slo, xp.float32)
        slo = xp.where(xp.isnan(slo), xp.inf, slo)
        return xp.where(xp.isfinite(slo), xp.maximum(x - slo, 0.0), 0.0)

    decode = xp.maximum(xp.asarray(problem.output_len, xp.float32) - 1.0, 0.0)
    per_row = (
        late(m.e2e_ms, problem.slo_e2e_ms)
        + late(m.ttft_ms, problem.slo_ttft_ms)
        + decode * late(m.tpot_ms, problem.slo_tpot_ms)
    )
    w = xp.asarray(problem.weight, xp.float32) * xp.asarray(problem.mask, xp.float32)
    return xp.sum(w * per_row) / xp.maximum(xp.sum(w), 1e-30)


Objective = Callable[..., Any]

OBJECTIVES: dict[str, Objective] = {
    "goodput": goodput_energy,
    "attainment": attainment_energy,
    "tardiness": tardiness_energy,
    "goodput_window": goodput_window_energy,
}
ALIASES = {"g": "goodput", "G": "goodput", "attain": "attainment", "wt": "tardiness"}


def get_objective(name: str) -> Objective:
    """The energy function registered under ``name`` (``goodput``/``G``, ``attainment``, ...)."""
    key = ALIASES.get(name, ALIASES.get(name.lower(), name.lower()))
    if key not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)} or 'G'")
    return OBJECTIVES[key]
