"""The closed loop: online speed and length fits, the state forecast, re-plans, the executor's
controller hooks, and whole runs on the drifting simulator."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from batch_runner.closed_loop import ClosedLoop, LoopConfig
from batch_runner.engines.base import EngineRequest
from batch_runner.engines.sim import SimEngine
from batch_runner.engines.sim_drift import make_drift
from batch_runner.executor import execute
from batch_runner.online_fit import OnlineLengths, OnlineSpeed, scaled_model
from batch_runner.replan import JobState, pending_problem, predict_from_state, replan
from sajax.engine_model import EngineModel
from sajax.heuristics import edf
from sajax.problem import Problem
from sajax.refsim import reference_simulate

from .stub_engines import StubEngine


def _model(slots=4):
    return EngineModel(
        slots=np.int32(slots),
        token_budget=np.int32(256),
        a_ms=np.float32(5.0),
        b_ms=np.float32(0.5),
        c_ms=np.float32(0.001),
        kv_capacity=np.int32(0),
    )


def _problem(n, seed=0, slo_scale=1.0):
    rng = np.random.default_rng(seed)
    out = rng.integers(5, 60, n)
    return Problem(
        input_len=rng.integers(10, 80, n).astype(np.int32),
        output_len=out.astype(np.int32),
        slo_e2e_ms=(slo_scale * rng.uniform(200, 3000, n)).astype(np.float32),
        slo_ttft_ms=np.full(n, np.inf, np.float32),
        slo_tpot_ms=np.full(n, np.inf, np.float32),
        weight=np.ones(n, np.float32),
        mask=np.ones(n, bool),
    )


def _requests(problem):
    return [
        EngineRequest(
            id=f"r{i}",
            prompt="p",
            max_new_tokens=int(problem.output_len[i]),
            ignore_eos=True,
            input_tokens_hint=int(problem.input_len[i]),
        )
        for i in range(len(problem.input_len))
    ]


def edf_planner(problem, model, config, key):
    """A fast stand-in for sajax.planner.plan: earliest deadline first at the full slots."""
    order = np.asarray(edf(problem, model))
    return SimpleNamespace(order=order[order < len(problem.input_len)], inflight_cap=model.slots)


# -- online fits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("log_iterations", [True, False])
def test_online_speed_finds_the_drifted_scale(log_iterations):
    model, problem = _model(), _problem(40)
    engine = SimEngine(model, drift=make_drift(speed=[[0.0, 2.5]]), log_iterations=log_iterations)
    engine.start()
    speed = OnlineSpeed(model, engine)
    assert speed.source == ("iterations" if log_iterations else "requests")
    assert speed.scale() == 1.0  # no evidence yet
    ctl = SimpleNamespace(
        on_submit=lambda rid, t: speed.observe_submit(rid, problem.input_len[int(rid[1:])], 60),
        on_first_token=lambda rid, t: None,
        on_complete=lambda m: speed.observe_finish(m.id, None, m.output_tokens, m.finish_ms),
        revise=lambda ids, now: None,
    )
    execute(engine, _requests(problem), 4, controller=ctl)
    assert speed.scale() == pytest.approx(2.5, rel=1e-3)
    assert float(speed.current_model().b_ms) == pytest.approx(1.25, rel=1e-3)


def test_online_lengths_learn_ratio_to_hints_and_task_medians():
    lengths = OnlineLengths(
        tasks=["a"] * 6 + ["b"] * 6 + ["c"],
        hints=[10] * 6 + [-1] * 6 + [-1],
        caps=[100] * 12 + [8],
        ignore_eos=[False] * 12 + [True],
        planned=[10] * 6 + [100] * 6 + [8],
        min_rows=3,
    )
    assert lengths.predict([0, 6, 12]).tolist() == [10, 100, 8]  # nothing learned yet
    for row, n in [(0, 20), (1, 22), (2, 18), (6, 40), (7, 44), (8, 42), (12, 3)]:
        lengths.observe(row, n)
    assert lengths.predict([3, 9, 12]).tolist() == [20, 42, 8]  # 10 x 2.0; median; ignore_eos
    assert lengths.summary()["a"]["hint_ratio"] == pytest.approx(2.0)


# -- forecast and re-plan ------------------------------------------------------------------------


def test_forecast_from_the_start_is_the_reference_simulation():
    model, p = _model(), _problem(30)
    order = list(np.random.default_rng(1).permutation(30))
    state = JobState(0.0, p, {}, [], order, 4)
    f = predict_from_state(state, order, 4, model)
    ref = reference_simulate(order, p.input_len, p.output_len, model)
    np.testing.assert_allclose(f.finish_ms, ref.finish_ms)
    met = ref.finish_ms <= p.slo_e2e_ms
    assert f.attainment == pytest.approx(met.mean())


def test_forecast_counts_done_rows_as_measured_and_shifts_to_now():
    model, p = _model(), _problem(10)
    state = JobState(1000.0, p, {0: True, 1: False}, [(2, 900.0)], list(range(3, 10)), 4)
    f = predict_from_state(state, state.pending, 4, model)
    assert np.isnan(f.finish_ms[:2]).all()
    assert (f.finish_ms[2:] > 1000.0).all() and f.first_ms[2] == 900.0
    met_rest = (f.finish_ms[2:] <= p.slo_e2e_ms[2:]).sum()
    assert f.attainment == pytest.approx((1 + met_rest) / 10)
    sub = pending_problem(state)
    np.testing.assert_allclose(sub.slo_e2e_ms, np.maximum(p.slo_e2e_ms[3:] - 1000.0, 0))


def test_replan_keeps_the_current_order_unless_the_new_one_is_better():
    model, p = _model(), _problem(40)
    # bounds that the input order meets exactly (5 % slack): EDF finds it, the reverse fails
    ref = reference_simulate(np.arange(40), p.input_len, p.output_len, model)
    p = p._replace(slo_e2e_ms=(1.05 * ref.finish_ms).astype(np.float32))
    state = JobState(0.0, p, {}, [], list(range(40))[::-1], 4)
    better = replan(state, model, objective="attainment", planner=edf_planner)
    assert better.after.attainment > better.before.attainment + 0.1 and better.changed
    assert sorted(better.order) == sorted(state.pending)

    def worse(problem, model, config, key):  # the reverse of EDF: the planner got it wrong
        return SimpleNamespace(order=edf_planner(problem, model, config, key).order[::-1],
                               inflight_cap=1)  # fmt: skip

    kept = replan(state._replace(pending=list(better.order)), model, objective="attainment",
                  planner=worse)  # fmt: skip
    assert not kept.changed and kept.order == list(better.order)
    assert kept.after == kept.before


# -- the executor's hooks ------------------------------------------------------------------------


def test_executor_applies_a_new_order_to_pending_requests_only():
    engine = StubEngine(slots=1)
    engine.start()
    reqs = [EngineRequest(id=f"r{i}", prompt="p", max_new_tokens=1) for i in range(6)]
    calls = []

    class Reverser:
        def on_submit(self, rid, t):
            calls.append(("submit", rid))

        def on_first_token(self, rid, t):
            pass

        def on_complete(self, m):
            calls.append(("done", m.id))

        def revise(self, pending, now):
            if len(pending) == 4:  # once, after r0 and r1 were submitted
                return pending[::-1], 2
            return None

    res = execute(engine, reqs, 1, controller=Reverser())
    by_rank = sorted(res.measurements, key=lambda m: m.rank)
    assert [m.id for m in by_rank] == ["r0", "r1", "r5", "r4", "r3", "r2"]
    assert [m.rank for m in by_rank] == list(range(6))
    assert sum(c[0] == "done" for c in calls) == 6


# -- whole runs on the drifting simulator --------------------------------------------------------


def _run(drift, *, loop=True, planner=edf_planner, n=80, **cfg):
    model, p = _model(), _problem(n, seed=3, slo_scale=1.5)
    order = np.argsort(-p.slo_e2e_ms, kind="stable")  # latest deadline first: a poor plan
    pred = reference_simulate(order, p.input_len, p.output_len, model).finish_ms
    engine = SimEngine(model, drift=drift)
    engine.start()
    reqs = _requests(p)
    ctl = None
    if loop:
        ids = [r.id for r in reqs]
        ctl = ClosedLoop(p, ids, 4, pred, model, engine, config=LoopConfig(**cfg),
                         objective="attainment", planner=planner)  # fmt: skip
    res = execute(engine, [reqs[i] for i in order], 4, controller=ctl)
    met = np.zeros(n, bool)
    for m in res.measurements:
        i = int(m.id[1:])
        met[i] = m.finish_ms <= p.slo_e2e_ms[i]
    return met.mean(), ctl


def test_no_drift_no_replan():
    att, ctl = _run(None)
    assert ctl.records == [] and ctl.speed.scale() == pytest.approx(1.0, rel=1e-3)
    assert not ctl.background  # virtual clock: re-plans run inline


def test_a_slowdown_is_detected_refitted_and_replanned():
    drift = make_drift(speed=[[2.0, 2.0]])
    att, ctl = _run(drift)
    assert ctl.records, "the slowdown must trigger a re-plan"
    first = ctl.records[0]
    assert first["reason"].startswith("drift") and first["t_s"] > 2.0
    assert first["speed_scale"] == pytest.approx(2.0, rel=0.05)
    assert first["predicted_attainment_after"] >= first["predicted_attainment_before"]
    assert len(ctl.records) <= 2  # once refitted, the forecast holds: no re-plan after re-plan
    s = ctl.summary()
    assert len(s["curves"]) == 1 + sum(1 for _ in s["replans"])
    assert all(0 <= y <= 1 for c in s["curves"] for _, y in c["points"])


def test_every_n_completions_replans_periodically():
    _, ctl = _run(None, every=20, n=80, min_interval_s=0.0)
    periodic = [r for r in ctl.records if r["reason"] == "every 20"]
    assert 2 <= len(periodic) <= 3 and len(ctl.records) <= 5
    _, spaced = _run(None, every=20, n=80, min_interval_s=1e9)
    assert len(spaced.records) == 1  # the first; the next would come too soon


def test_a_failing_replan_keeps_the_order_and_the_job_goes_on():
    def broken(*a):
        raise RuntimeError("planner exploded")

    att, ctl = _run(None, planner=broken, every=30, background=True, min_interval_s=0.0)
    ctl.close()
    assert any("planner exploded" in r.get("error", "") for r in ctl.records)
    assert att > 0


def test_scaled_model_multiplies_every_cost():
    m = scaled_model(_model(), 3.0)
    assert (float(m.a_ms), float(m.b_ms), float(m.c_ms)) == pytest.approx((15.0, 1.5, 0.003))
