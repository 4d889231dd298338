"""The replica worker (what a Ray actor holds), in-process: no Ray needed."""

from __future__ import annotations

import time

from batch_runner.engines.base import EngineRequest
from batch_runner.replica_worker import ReplicaWorker
from tests.batch_runner.stub_engines import StubEngine


def _worker(engine=None, **run) -> ReplicaWorker:
    w = ReplicaWorker({"engine": "sim", "profile": "default"}, replica=3)
    if engine is None:
        info = w.start()
        assert info["name"] == "sim" and info["model"]["slots"] >= 1
    else:
        w.engine = engine
        engine.start()
    w.run(**({"cap": 2} | run))
    return w


def _requests(n, prefix="r"):
    return [
        (EngineRequest(id=f"{prefix}{i}", prompt="x" * 40, max_new_tokens=8), 10 + i)
        for i in range(n)
    ]


def _drain(w, n, timeout=30.0):
    got, status = [], {}
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        batch, status = w.poll(0.2)
        got += batch
        if status["error"]:
            break
    return got, status


def test_sim_worker_runs_its_queue_in_order_with_ranks_kept():
    w = _worker()
    w.extend(_requests(6))
    w.extend(_requests(3, prefix="s"))
    got, status = _drain(w, 9)
    w.stop()
    assert sorted(m.id for m in got) == sorted([f"r{i}" for i in range(6)] + ["s0", "s1", "s2"])
    assert {m.id: m.rank for m in got}["r4"] == 14
    assert all(m.error is None and m.finish_ms >= m.first_token_ms >= 0 for m in got)
    assert status["pending"] == 0 and status["inflight"] == 0


def test_take_pending_returns_only_what_was_never_submitted():
    engine = StubEngine(hang_after=0)  # submits, never finishes: everything stays in flight
    w = _worker(engine, cap=2)
    w.extend(_requests(5))
    time.sleep(0.3)
    taken = w.take_pending()
    assert taken == ["r2", "r3", "r4"]  # r0, r1 were submitted (cap 2) and stay here
    assert engine.submitted == ["r0", "r1"]
    w.stop()


def test_failed_attempts_are_retried_then_become_error_rows():
    engine = StubEngine(fail_attempts={"r1": 1, "r2": 5})
    w = _worker(engine, cap=1, max_retries=2)
    w.extend(_requests(3))
    got, _ = _drain(w, 3)
    w.stop()
    by_id = {m.id: m for m in got}
    assert by_id["r1"].error is None and by_id["r1"].attempts == 2
    assert by_id["r2"].error.startswith("failed after 3 attempt(s)")


def test_a_dead_engine_is_reported_in_the_status():
    w = _worker(StubEngine(die_after=2), cap=1)
    w.extend(_requests(4))
    got, status = _drain(w, 4, timeout=10)
    w.stop()
    assert len(got) == 2
    assert "device lost" in status["error"]


def test_a_stalled_engine_is_reported_after_the_stall_timeout():
    w = _worker(StubEngine(hang_after=1), cap=1, stall_timeout_s=0.3)
    w.extend(_requests(3))
    got, status = _drain(w, 3, timeout=10)
    w.stop()
    assert len(got) == 1 and "stall timeout" in status["error"]
