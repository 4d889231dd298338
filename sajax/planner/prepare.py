"""Problem preparation for the planner: the real rows first and padded to a size bucket
(``compact``), the candidate in-flight caps (``candidate_caps``), the search's data
(``make_data``, ``with_models``: one instance per cap) and the attainment tie-break's latency
scale (``objective_scale``).

    rows, cp = compact(problem)
    caps = candidate_caps(slots=32)  # [32, 24, 16, 8]
"""

from __future__ import annotations

import jax
import numpy as np

from sajax.engine_model import EngineModel
from sajax.objectives.slo import objective_params
from sajax.planner.config import PlanConfig
from sajax.planner.energy import PlanData
from sajax.problem import Problem, bucket_size
from sajax.robust import length_scenarios


def _np_problem(problem: Problem) -> Problem:
    return Problem(*(np.asarray(x) for x in problem))


def compact(problem: Problem, bucket: int | None = None) -> tuple[np.ndarray, Problem]:
    """The real rows first, padded to ``bucket`` (default ``sajax.problem.bucket_size``)."""
    p = _np_problem(problem)
    rows = np.flatnonzero(p.mask).astype(np.int64)
    n = len(rows)
    size = bucket or bucket_size(n)
    if size < n:
        raise ValueError(f"bucket {size} is smaller than the {n} real rows")
    pad = size - n

    def take(x, fill, dtype):
        return np.concatenate([x[rows].astype(dtype), np.full(pad, fill, dtype)])

    out = Problem(
        input_len=take(p.input_len, 1, np.int32),
        output_len=take(p.output_len, 1, np.int32),
        slo_e2e_ms=take(p.slo_e2e_ms, np.inf, np.float32),
        slo_ttft_ms=take(p.slo_ttft_ms, np.inf, np.float32),
        slo_tpot_ms=take(p.slo_tpot_ms, np.inf, np.float32),
        weight=take(p.weight, 0.0, np.float32),
        mask=np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]),
    )
    return rows, out


def candidate_caps(slots: int, caps: tuple[int, ...] | None = None) -> list[int]:
    """In-flight caps to try: the given ones (<= slots), else slots and slots * {3/4, 1/2, 1/4}."""
    slots = int(slots)
    if caps is not None:
        chosen = sorted({min(int(c), slots) for c in caps}, reverse=True)
    else:
        chosen = sorted({max(1, round(slots * f)) for f in (1.0, 0.75, 0.5, 0.25)}, reverse=True)
    return chosen


def _models_by_cap(model: EngineModel, caps: list[int]) -> EngineModel:
    m = EngineModel(*(np.asarray(x) for x in model))
    stacked = [np.broadcast_to(x, (len(caps), *np.shape(x))).copy() for x in m]
    stacked[0] = np.asarray(caps, dtype=np.asarray(m.slots).dtype)
    return EngineModel(*stacked)


def _batched(data: PlanData, b: int) -> PlanData:
    """``data`` with everything but the model repeated along a new leading axis of size b."""
    rep = lambda x: np.broadcast_to(np.asarray(x), (b, *np.shape(x)))  # noqa: E731
    return PlanData(
        jax.tree.map(rep, data.problem),
        data.model,
        jax.tree.map(rep, data.params),
        rep(data.offset_ms),
    )


def with_models(data: PlanData, models: EngineModel) -> PlanData:
    """``data`` batched along the leading axis of ``models`` (one instance per model)."""
    b = int(np.shape(models.slots)[0])
    return _batched(data, b)._replace(model=models)


def objective_scale(cp: Problem, model: EngineModel) -> float:
    """A latency scale for the attainment tie-break: serial alone-time of every request."""
    return float(max(np.sum(alone_time_ms(cp, model)[np.asarray(cp.mask)]), 1.0))


def alone_time_ms(cp: Problem, model: EngineModel) -> np.ndarray:
    """(N,) e2e of each request alone on an idle engine (the fast model's ``alone_time``)."""
    from sajax import heuristics

    return np.asarray(heuristics.alone_time(cp, model).e2e_ms, np.float64)


def make_data(
    cp: Problem, model: EngineModel, config: PlanConfig, key, scale_ms: float
) -> PlanData:
    """PlanData for the search (robust mode: output_len becomes (K, N) scenarios)."""
    params = objective_params(tau=config.tau, scale_ms=scale_ms)
    prob = _np_problem(cp)
    if config.scenarios > 0:
        out = length_scenarios(key, prob.output_len, config.scenarios, config.length_sigma)
        prob = prob._replace(output_len=out)
    return PlanData(prob, EngineModel(*(np.asarray(x) for x in model)), params, np.float32(0))
