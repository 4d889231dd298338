"""Executor: plan order, in-flight cap, relative times, retries, error rows, dead engines."""

from __future__ import annotations

import pytest

from batch_runner.engines.base import EngineError, EngineRequest
from batch_runner.executor import execute
from tests.batch_runner.stub_engines import StubEngine


def _requests(n, **kw):
    return [EngineRequest(id=f"r{i}", prompt="x" * i, max_new_tokens=5 + i, **kw) for i in range(n)]


def _started(**kw):
    engine = StubEngine(**kw)
    engine.start()
    return engine


@pytest.mark.parametrize("cap", [1, 2, 5])
def test_submits_in_plan_order_within_cap(cap):
    engine = _started()
    reqs = _requests(7)[::-1]  # a plan order that is not the id order
    seen = []
    result = execute(engine, reqs, cap, on_result=seen.append)
    assert engine.submitted == [r.id for r in reqs]
    assert engine.max_outstanding <= cap
    assert [m.id for m in result.measurements] == [r.id for r in reqs]  # served FIFO
    assert seen == result.measurements
    assert [m.rank for m in result.measurements] == list(range(7))
    assert not result.stopped and result.unfinished == []


def test_times_are_relative_to_start_and_ordered():
    engine = _started(t_start=1234.0)
    result = execute(engine, _requests(4), 2)
    assert result.t0 == 1234.0
    for k, m in enumerate(result.measurements):
        assert m.submit_ms <= m.first_token_ms <= m.finish_ms
        assert m.finish_ms == pytest.approx(1000.0 * (k + 1))
        assert m.first_token_ms == pytest.approx(1000.0 * (k + 1) - 500.0)
        assert m.error is None and m.attempts == 1
        assert m.output_text == f"out-{m.id}"


def test_failed_attempt_is_retried_at_the_front():
    engine = _started(fail_attempts={"r1": 1})
    result = execute(engine, _requests(5), 2)
    # r1 fails after r0 finished; the retry goes before the rest of the plan (r3, r4).
    assert engine.submitted == ["r0", "r1", "r2", "r1", "r3", "r4"]
    by_id = {m.id: m for m in result.measurements}
    assert set(by_id) == {f"r{i}" for i in range(5)}
    assert by_id["r1"].error is None and by_id["r1"].attempts == 2
    assert by_id["r1"].submit_ms == 0.0  # first submission, not the retry's
    assert by_id["r1"].rank == 1


def test_request_that_keeps_failing_becomes_an_error_row_and_the_job_goes_on():
    engine = _started(fail_attempts={"r2": 99})
    result = execute(engine, _requests(5), 3, max_retries=2)
    by_id = {m.id: m for m in result.measurements}
    assert len(result.measurements) == 5
    bad = by_id["r2"]
    assert bad.attempts == 3 and engine.submitted.count("r2") == 3
    assert "out of memory" in bad.error and bad.first_token_ms is None
    assert bad.output_tokens is None and bad.finish_reason is None
    assert all(by_id[i].error is None for i in ("r0", "r1", "r3", "r4"))


def test_submit_exception_is_a_request_failure():
    engine = _started(reject_attempts={"r0": 5})
    result = execute(engine, _requests(3), 2, max_retries=1)
    by_id = {m.id: m for m in result.measurements}
    assert "ValueError: prompt too long" in by_id["r0"].error
    assert by_id["r0"].attempts == 2
    assert by_id["r1"].error is None and by_id["r2"].error is None


def test_no_retries():
    engine = _started(fail_attempts={"r0": 1})
    result = execute(engine, _requests(2), 1, max_retries=0)
    assert result.measurements[0].error is not None
    assert engine.submitted == ["r0", "r1"]


def test_dead_engine_raises_after_reporting_what_finished():
    engine = _started(die_after=3)
    seen = []
    with pytest.raises(EngineError, match="device lost"):
        execute(engine, _requests(6), 2, on_result=seen.append)
    assert [m.id for m in seen] == ["r0", "r1", "r2"]


def test_stalled_engine_raises_after_the_stall_timeout():
    engine = _started(hang_after=3)
    seen = []
    with pytest.raises(EngineError, match=r"no event from the engine for 0.2 s .*stall timeout"):
        execute(engine, _requests(6), 2, on_result=seen.append, stall_timeout_s=0.2)
    assert [m.id for m in seen] == ["r0", "r1", "r2"]


def test_stall_timeout_does_not_fire_while_events_come():
    # the stub answers every poll with events: even a zero timeout never fires
    result = execute(_started(), _requests(6), 2, stall_timeout_s=0.0)
    assert len(result.measurements) == 6


def test_should_stop_returns_with_the_unfinished_ids():
    engine = _started()
    seen = []
    result = execute(
        engine, _requests(6), 2, on_result=seen.append, should_stop=lambda: len(seen) >= 2
    )
    assert result.stopped
    assert [m.id for m in result.measurements] == ["r0", "r1"]
    assert sorted(result.unfinished) == ["r2", "r3", "r4", "r5"]


def test_first_rank_offsets_ranks():
    result = execute(_started(), _requests(3), 1, first_rank=10)
    assert [m.rank for m in result.measurements] == [10, 11, 12]


def test_bad_arguments():
    with pytest.raises(ValueError):
        execute(_started(), _requests(2), 0)
    dup = [EngineRequest(id="a"), EngineRequest(id="a")]
    with pytest.raises(ValueError):
        execute(_started(), dup, 1)


def test_empty_plan():
    result = execute(_started(), [], 4)
    assert result.measurements == [] and not result.stopped
