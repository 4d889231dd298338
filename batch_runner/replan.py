"""Re-planning mid-job: predict the rest of a job from its current state, and re-order the
requests not yet admitted.

The state at job time ``now`` (ms from t0): rows done (their measured SLO outcome), rows in
flight (submitted; some with their first token), rows pending in the current order. The
prediction of the rest (``predict_from_state``) runs the reference simulator from ``now``: the
rows in flight first, in submission order, with what is left of them (a row that has its first
token has its prompt done and ``tokens so far ~= (now - first) / decode step`` generated), then
the pending rows in the candidate order, on the current (refitted) engine model at the cap.
Times come back on the job clock (``now + simulated``); a row in flight keeps its measured
first token. Predicted attainment of the whole job = measured hits of the rows done +
predicted hits of the rest, over every row of the run that has an SLO.

A re-plan (``replan``): the planner (``sajax.planner.plan``, public API only) gets the pending
rows as a fresh offline problem *in their current order*, so its ``fcfs`` seed is the warm
start (the planner never returns a plan its own model scores worse than its best seed), with
e2e / TTFT bounds shortened by ``now`` (a bound already past is 0: a miss) and a short time
budget. Its order is then scored from the state (above) against the current order; the better
one, by the job's objective, is kept.

    choice = replan(state, model, objective="goodput", budget_s=2.0)
    choice.order, choice.cap, choice.before, choice.after
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from sajax.engine_model import EngineModel
from sajax.metrics import problem_metrics
from sajax.problem import Problem
from sajax.refsim import ContinuousBatchSim


class JobState(NamedTuple):
    now_ms: float  # job clock (ms from t0) of the snapshot
    problem: Problem  # every row of the run (index = row), output_len = current predictions
    done_met: dict  # row -> measured SLO outcome (bool), rows that finished or failed
    inflight: list  # [(row, first_token_ms or None)] in submission order
    pending: list  # rows not yet submitted, in the current order
    cap: int  # the current in-flight cap


class Forecast(NamedTuple):
    attainment: float  # predicted attainment of the whole run (done: measured)
    goodput: float  # predicted G of the whole run (done rows count with their measured e2e)
    mean_e2e_ms: float  # over the rows still to finish
    first_ms: np.ndarray  # (n,) predicted first token, job clock; NaN for rows done
    finish_ms: np.ndarray  # (n,) predicted finish, job clock; NaN for rows done


class Choice(NamedTuple):
    order: list  # pending rows in the chosen order
    cap: int
    before: Forecast  # the current order
    after: Forecast  # the chosen order (== before when the current order was kept)
    changed: bool  # the order or the cap changed
    plan_time_s: float


def predict_from_state(
    state: JobState, order, cap: int, model: EngineModel, done_e2e_ms=None
) -> Forecast:
    """The rest of the job when ``order`` (pending rows) runs next at ``cap`` (module doc)."""
    p = state.problem
    n = len(p.input_len)
    cap = max(1, int(cap))
    sim = ContinuousBatchSim(model._replace(slots=np.int32(cap)))
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    step_ms = float(model.a_ms) + float(model.b_ms + model.d_ms) * max(1, len(state.inflight))
    for row, first_ms in state.inflight:
        out = int(p.output_len[row])
        if first_ms is None:
            sim.submit(row, int(p.input_len[row]), out)
        else:
            generated = 1 + int(max(0.0, state.now_ms - first_ms) / max(step_ms, 1e-6))
            sim.submit(row, 1, max(1, out - generated))
            first[row] = first_ms
    for row in order:
        sim.submit(int(row), int(p.input_len[row]), int(p.output_len[row]))
    while True:
        it = sim.advance()
        if it.idle:
            break
        t = state.now_ms + it.t_end_ms
        for row in it.first_token:
            if np.isnan(first[row]):
                first[row] = t
        finish[list(it.finished)] = t
    return _forecast(state, first, finish, done_e2e_ms)


def _forecast(state: JobState, first, finish, done_e2e_ms) -> Forecast:
    p = state.problem
    live = np.isfinite(finish)
    safe_first = np.where(live, first, 0.0)
    safe_finish = np.where(live, finish, 0.0)
    m = problem_metrics(safe_first, safe_finish, p)
    met = np.asarray(m.met, bool) & live
    has = np.asarray(m.has_slo, bool)
    w = np.asarray(p.weight, np.float64)
    done_rows = np.fromiter(state.done_met, np.int64, len(state.done_met))
    done_hits = np.array([bool(state.done_met[r]) for r in done_rows], bool)
    hits = float(np.sum(w * (met & has))) + float(
        np.sum(w[done_rows] * (done_hits & has[done_rows]))
    )
    total = float(np.sum(w[has]))
    e2e_rest = safe_finish[live]
    e2e_sum = float(np.sum(e2e_rest))
    if done_e2e_ms is not None:
        e2e_sum += float(np.nansum([done_e2e_ms.get(r, np.nan) for r in done_rows]))
    return Forecast(
        attainment=hits / total if total > 0 else float("nan"),
        goodput=hits / (e2e_sum / 1000.0) if e2e_sum > 0 else float("nan"),
        mean_e2e_ms=float(np.mean(e2e_rest)) if live.any() else float("nan"),
        first_ms=first,
        finish_ms=finish,
    )


def _better(a: Forecast, b: Forecast, objective: str) -> bool:
    """True when ``a`` is strictly better than ``b`` for the job's objective."""
    if objective == "goodput" and np.isfinite(a.goodput) and np.isfinite(b.goodput):
        return a.goodput > b.goodput * (1 + 1e-9)
    if a.attainment != b.attainment:
        return a.attainment > b.attainment
    return a.mean_e2e_ms < b.mean_e2e_ms * (1 - 1e-9)


def pending_problem(state: JobState) -> Problem:
    """The pending rows as an offline problem in their current order, bounds shortened by now."""
    p = state.problem
    rows = np.asarray(state.pending, np.int64)
    shift = np.float32(state.now_ms)

    def bound(x):
        x = np.asarray(x, np.float32)[rows]
        return np.where(np.isfinite(x), np.maximum(x - shift, 0.0), x).astype(np.float32)

    return Problem(
        input_len=np.asarray(p.input_len, np.int32)[rows],
        output_len=np.asarray(p.output_len, np.int32)[rows],
        slo_e2e_ms=bound(p.slo_e2e_ms),
        slo_ttft_ms=bound(p.slo_ttft_ms),
        slo_tpot_ms=np.asarray(p.slo_tpot_ms, np.float32)[rows],
        weight=np.asarray(p.weight, np.float32)[rows],
        mask=np.ones(len(rows), bool),
    )


def replan(
    state: JobState,
    model: EngineModel,
    *,
    objective: str = "goodput",
    budget_s: float = 2.0,
    seed: int = 0,
    done_e2e_ms=None,
    planner=None,
) -> Choice:
    """Re-order ``state.pending`` (module doc). ``planner(problem, model, config, key)``
    defaults to ``sajax.planner.plan``."""
    started = time.perf_counter()
    before = predict_from_state(state, state.pending, state.cap, model, done_e2e_ms)
    if len(state.pending) < 2:
        return Choice(list(state.pending), state.cap, before, before, False, 0.0)
    import jax

    from sajax.planner import PlanConfig
    from sajax.planner import plan as sajax_plan

    planner = planner or sajax_plan
    config = PlanConfig(objective=objective, time_budget_s=max(0.05, float(budget_s)))
    result = planner(pending_problem(state), model, config, jax.random.key(seed))
    rows = np.asarray(state.pending, np.int64)
    order = [int(r) for r in rows[np.asarray(result.order, np.int64)]]
    cap = int(result.inflight_cap)
    after = predict_from_state(state, order, cap, model, done_e2e_ms)
    elapsed = time.perf_counter() - started
    if _better(after, before, objective):
        changed = order != list(state.pending) or cap != state.cap
        return Choice(order, cap, before, after, changed, elapsed)
    return Choice(list(state.pending), state.cap, before, before, False, elapsed)
