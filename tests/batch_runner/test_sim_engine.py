"""The sim engine: output/input lengths, event times, admission in submission order, clocks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from batch_runner.engines.base import Engine, EngineError, EngineRequest, Finished, FirstToken
from batch_runner.engines.sim import (
    SimEngine,
    estimate_input_tokens,
    simulated_output_tokens,
)
from batch_runner.executor import execute
from sajax.engine_model import EngineModel


def _model(slots=2, token_budget=256):
    return EngineModel(
        slots=np.int32(slots),
        token_budget=np.int32(token_budget),
        a_ms=np.float32(5.0),
        b_ms=np.float32(0.05),
        c_ms=np.float32(0.001),
        kv_capacity=np.int32(0),
    )


def _drain(engine, n_finished):
    events = []
    while sum(isinstance(e, Finished) for e in events) < n_finished:
        got = engine.poll(0.1)
        if engine.pace is None:  # paced, a poll may time out first
            assert got, "poll must return at least one event while requests are in flight"
        events.extend(got)
    return events


def test_is_an_engine():
    assert isinstance(SimEngine(_model()), Engine)
    assert SimEngine(_model()).name == "sim"


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"max_new_tokens": 40}, 40),
        ({"max_new_tokens": 40, "output_tokens_hint": 7}, 7),
        ({"max_new_tokens": 40, "output_tokens_hint": 90}, 40),  # the cap wins
        ({"max_new_tokens": 40, "output_tokens_hint": 7, "ignore_eos": True}, 40),
        ({"max_new_tokens": 40, "output_tokens_hint": 0}, 1),
    ],
)
def test_output_length_rules(kw, expected):
    assert simulated_output_tokens(EngineRequest(id="a", **kw)) == expected


def test_input_length_estimate():
    assert estimate_input_tokens(EngineRequest(id="a", prompt="x" * 41)) == 11
    assert estimate_input_tokens(EngineRequest(id="a", prompt="x" * 41, input_tokens_hint=3)) == 3
    msgs = ({"role": "system", "content": "abcd"}, {"role": "user", "content": "efgh"})
    assert estimate_input_tokens(EngineRequest(id="a", messages=msgs)) == 2 + 2 * 4
    assert estimate_input_tokens(EngineRequest(id="a", prompt="")) == 1


def test_finished_events_carry_lengths_and_reason():
    engine = SimEngine(_model())
    engine.start()
    engine.submit(EngineRequest(id="eos", prompt="x" * 80, max_new_tokens=30, output_tokens_hint=5))
    engine.submit(EngineRequest(id="len", prompt="x" * 8, max_new_tokens=6, ignore_eos=True))
    done = {e.id: e for e in _drain(engine, 2) if isinstance(e, Finished)}
    assert (done["eos"].output_tokens, done["eos"].finish_reason) == (5, "stop")
    assert (done["len"].output_tokens, done["len"].finish_reason) == (6, "length")
    assert done["eos"].input_tokens == 20 and done["len"].input_tokens == 2
    assert done["eos"].text == "" and done["len"].text == ""
    assert engine.poll(0.0) == []  # idle: nothing to advance


def test_times_are_ordered_and_on_the_virtual_clock():
    engine = SimEngine(_model(slots=3))
    engine.start()
    assert engine.now() == 0.0
    for i in range(6):
        engine.submit(EngineRequest(id=f"r{i}", prompt="y" * 40 * (i + 1), max_new_tokens=8 + i))
    wall = time.monotonic()
    events = _drain(engine, 6)
    assert time.monotonic() - wall < 5.0  # no sleeping on the virtual clock
    first = {e.id: e.t for e in events if isinstance(e, FirstToken)}
    finish = {e.id: e.t for e in events if isinstance(e, Finished)}
    assert set(first) == set(finish) == {f"r{i}" for i in range(6)}
    assert all(0.0 < first[r] < finish[r] for r in first)  # >1 output token: decode after
    stamps = [e.t for e in events]
    assert stamps == sorted(stamps)
    assert engine.now() == pytest.approx(max(finish.values()))


def test_admission_follows_submission_order():
    engine = SimEngine(_model(slots=1))
    engine.start()
    order = ["c", "a", "d", "b"]
    for rid in order:
        engine.submit(EngineRequest(id=rid, prompt="z" * 100, max_new_tokens=4))
    events = _drain(engine, 4)
    assert [e.id for e in events if isinstance(e, FirstToken)] == order
    assert [e.id for e in events if isinstance(e, Finished)] == order


def test_executor_on_sim_reports_times_from_t0():
    engine = SimEngine(_model(slots=2))
    engine.start()
    reqs = [EngineRequest(id=f"r{i}", prompt="p" * 64, max_new_tokens=5) for i in range(5)]
    result = execute(engine, reqs, inflight_cap=2)
    ms = {m.id: m for m in result.measurements}
    assert result.t0 == 0.0
    assert all(m.submit_ms <= m.first_token_ms < m.finish_ms for m in ms.values())
    # With the cap at 2 the last request can start only after the first ones finished.
    assert ms["r4"].submit_ms >= min(ms["r0"].finish_ms, ms["r1"].finish_ms)
    assert [m.output_tokens for m in result.measurements] == [5] * 5


def test_pace_tracks_wall_time():
    engine = SimEngine(_model(slots=4), pace=None)
    engine.start()
    for i in range(4):
        engine.submit(EngineRequest(id=f"r{i}", prompt="q" * 400, max_new_tokens=20))
    virtual = _drain(engine, 4)
    sim_s = engine.now()
    pace = sim_s / 0.3  # the same work should take about 0.3 wall seconds
    paced = SimEngine(_model(slots=4), pace=pace)
    paced.start()
    time.sleep(0.05)  # an idle paced engine's clock moves on with the wall clock
    t_submit = paced.now()
    assert t_submit >= 0.04 * pace
    for i in range(4):
        paced.submit(EngineRequest(id=f"r{i}", prompt="q" * 400, max_new_tokens=20))
    wall = time.monotonic()
    events = _drain(paced, 4)
    elapsed = time.monotonic() - wall
    # The same simulated durations between events, shifted to when the work was submitted.
    assert [e.id for e in events] == [e.id for e in virtual]
    shift = events[0].t - virtual[0].t
    assert shift == pytest.approx(t_submit, abs=0.01 * sim_s)
    assert [e.t - shift for e in events] == pytest.approx([e.t for e in virtual], abs=1e-9)
    assert 0.25 <= elapsed < 3.0


def test_errors():
    engine = SimEngine(_model())
    with pytest.raises(EngineError):
        engine.submit(EngineRequest(id="a"))
    engine.start()
    engine.submit(EngineRequest(id="a"))
    with pytest.raises(ValueError):
        engine.submit(EngineRequest(id="a"))
    with pytest.raises(ValueError):
        SimEngine(_model(), pace=0.0)


def test_paced_poll_returns_by_its_timeout():
    engine = SimEngine(_model(slots=1), pace=1e-3)  # 1 simulated ms per wall second
    engine.start()
    engine.submit(EngineRequest(id="slow", prompt="q" * 4000, max_new_tokens=50))
    wall = time.monotonic()
    assert engine.poll(0.05) == []
    assert time.monotonic() - wall < 1.0
