"""The sim engine's drift: a speed change mid-job, output lengths off the hints, the iteration
log, and SAJAX_SIM_DRIFT."""

from __future__ import annotations

import numpy as np
import pytest

from batch_runner.engines.base import EngineRequest, Finished
from batch_runner.engines.sim import SimEngine, simulated_output_tokens
from batch_runner.engines.sim_drift import SimDrift, drift_from_env, make_drift
from batch_runner.errors import ConfigError
from batch_runner.executor import execute
from sajax.engine_model import EngineModel


def _model(slots=2):
    return EngineModel(
        slots=np.int32(slots),
        token_budget=np.int32(256),
        a_ms=np.float32(5.0),
        b_ms=np.float32(0.5),
        c_ms=np.float32(0.0),
        kv_capacity=np.int32(0),
    )


def _requests(n, out=20, prompt="x" * 40):
    return [
        EngineRequest(id=f"r{i}", prompt=prompt, max_new_tokens=out, ignore_eos=True)
        for i in range(n)
    ]


def _finish_times(engine, requests, cap=1):
    engine.start()
    res = execute(engine, requests, cap)
    return {m.id: m.finish_ms for m in res.measurements}


def test_a_speed_change_doubles_iteration_cost_from_its_time_on():
    plain = _finish_times(SimEngine(_model()), _requests(4))
    # One request at a time: each takes the same time; after the change, twice that.
    per = plain["r0"]
    at = 2 * per / 1000.0  # the change comes exactly when r2 starts
    drifted = _finish_times(SimEngine(_model(), drift=make_drift(speed=[[at, 2.0]])), _requests(4))
    assert drifted["r0"] == pytest.approx(plain["r0"])
    assert drifted["r1"] == pytest.approx(plain["r1"])
    assert drifted["r2"] - drifted["r1"] == pytest.approx(2 * per, rel=1e-6)
    assert drifted["r3"] - drifted["r2"] == pytest.approx(2 * per, rel=1e-6)


def test_speed_can_change_back():
    per = _finish_times(SimEngine(_model()), _requests(1))["r0"]
    drift = make_drift(speed=[[0.0, 3.0], [3 * per / 1000.0, 1.0]])
    t = _finish_times(SimEngine(_model(), drift=drift), _requests(2))
    assert t["r0"] == pytest.approx(3 * per, rel=1e-6)
    assert t["r1"] - t["r0"] == pytest.approx(per, rel=1e-6)


def test_iteration_log_records_every_iteration_at_its_speed():
    engine = SimEngine(_model(), drift=make_drift(speed=[[0.0, 2.0]]), log_iterations=True)
    _finish_times(engine, _requests(2), cap=2)
    log = engine.iteration_log
    assert len(log) >= 20  # 20 tokens each: every iteration is a record
    for r in log:
        forward = r.decode_tokens + r.prefill_tokens
        assert 1000 * r.seconds == pytest.approx(2 * (5.0 + 0.5 * forward), rel=1e-5)
    assert SimEngine(_model()).iteration_log is None  # not logging: no log


def test_output_lengths_differ_from_hints_deterministically():
    drift = make_drift(output_scale=1.5, output_sigma=0.3, seed=1)
    reqs = [
        EngineRequest(id=f"q{i}", prompt="p", max_new_tokens=500, output_tokens_hint=40)
        for i in range(200)
    ]
    n = np.array([simulated_output_tokens(r, drift) for r in reqs])
    assert np.array_equal(n, [simulated_output_tokens(r, drift) for r in reqs])
    assert 1.3 < np.median(n) / 40 < 1.7 and n.std() > 5
    capped = EngineRequest(id="c", prompt="p", max_new_tokens=10, output_tokens_hint=40)
    assert simulated_output_tokens(capped, drift) == 10
    eos = EngineRequest(id="e", prompt="p", max_new_tokens=7, ignore_eos=True)
    assert simulated_output_tokens(eos, drift) == 7
    engine = SimEngine(_model(), drift=drift)
    engine.start()
    res = execute(engine, reqs[:5], 2)
    assert sorted(m.output_tokens for m in res.measurements) == sorted(n[:5].tolist())
    assert all(isinstance(m, object) for m in res.measurements)


def test_drift_from_env(monkeypatch):
    monkeypatch.setenv("SAJAX_SIM_DRIFT", '{"speed": [[30, 2]], "output_scale": 0.5}')
    assert drift_from_env() == SimDrift(((30.0, 2.0),), 0.5, 0.0, 0)
    for bad in ("nope", "[1]", '{"speed": [[1, -2]]}', '{"sped": []}', '{"output_scale": 0}'):
        monkeypatch.setenv("SAJAX_SIM_DRIFT", bad)
        with pytest.raises(ConfigError, match="drift|SAJAX_SIM_DRIFT"):
            drift_from_env()
    monkeypatch.setenv("SAJAX_SIM_DRIFT", "")
    assert drift_from_env() is None


def test_paced_engine_applies_the_speed_change():
    drift = make_drift(speed=[[0.05, 2.0]])
    engine = SimEngine(_model(), pace=200.0, drift=drift)
    engine.start()
    t0 = engine.now()
    for r in _requests(2):
        engine.submit(r)
    done = {}
    while len(done) < 2:
        for e in engine.poll(0.05):
            if isinstance(e, Finished):
                done[e.id] = 1000 * (e.t - t0)
    virtual = _finish_times(SimEngine(_model(), drift=drift), _requests(2), cap=2)
    plain = _finish_times(SimEngine(_model()), _requests(2), cap=2)
    # the change is on the engine's clock from start(): the paced job (which began a little
    # after start) is slower than the virtual one by at most that little
    assert max(virtual.values()) > 1.4 * max(plain.values())
    assert max(virtual.values()) * 0.99 <= max(done.values()) <= 2.0 * max(plain.values())
