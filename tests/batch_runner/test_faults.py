"""Fault injection at the job level: failing requests, a dying engine, full disks.

Invariant in every case: after the fault (and a ``--resume`` where the job stopped), the output
has every input row exactly once, in input order, and nothing checkpointed before is lost.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_runner import checkpoint, job
from batch_runner.checkpoint import CheckpointError, CheckpointWriteError, load_parts
from batch_runner.errors import OutputError
from batch_runner.job import (
    EngineDied,
    JobConfig,
    JobInterrupted,
    OutputWriteError,
    run_job,
    run_step,
)
from tests.batch_runner.stub_engines import StubEngine

N = 12


@pytest.fixture
def paths(tmp_path):
    src = tmp_path / "requests.parquet"
    pq.write_table(
        pa.table(
            {
                "id": [f"q{i:02d}" for i in range(N)],
                "prompt": [f"prompt {i}" for i in range(N)],
                "task": ["chat", "code"] * (N // 2),
                "slo_e2e_ms": [6000.0] * N,
                "tag": list(range(N)),
            }
        ),
        src,
    )
    return src, tmp_path / "out" / "results.parquet"


def _config(paths, **kw):
    src, out = paths
    kw.setdefault("policy", "fcfs")
    kw.setdefault("checkpoint_rows", 2)
    kw.setdefault("checkpoint_min_seconds", 0.0)
    return JobConfig(input=src, out=out, quiet=True, **kw)


def _check_complete(out):
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"q{i:02d}" for i in range(N)]
    assert table.column("tag").to_pylist() == list(range(N))
    assert not checkpoint.parts_dir_for(out).exists()
    return table


def test_failing_requests_become_error_rows(paths):
    engine = StubEngine(fail_attempts={"q03": 99, "q07": 1})
    summary = run_job(_config(paths), engine=engine)
    table = _check_complete(paths[1])
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["q03"]["error"].startswith("failed after 3 attempt(s)")
    assert rows["q03"]["slo_met"] is False and rows["q03"]["e2e_ms"] is None
    assert rows["q07"]["error"] is None and rows["q07"]["output_text"] == "out-q07"
    assert summary["errors"] == 1 and summary["rows"] == N
    assert engine.stopped


def test_dead_engine_stops_the_job_and_resume_finishes_it(paths):
    with pytest.raises(EngineDied) as info:
        run_job(_config(paths), engine=StubEngine(die_after=5))
    err = info.value
    assert err.exit_code == 3
    assert "device lost" in err.message and "--resume" in err.message
    parts = checkpoint.parts_dir_for(paths[1])
    saved = load_parts(parts)
    assert sorted(saved.column("id").to_pylist()) == [f"q{i:02d}" for i in range(5)]
    assert not paths[1].exists()

    engine = StubEngine()
    summary = run_job(_config(paths, resume=True), engine=engine)
    assert engine.submitted == [f"q{i:02d}" for i in range(5, N)]  # only the rest
    table = _check_complete(paths[1])
    assert summary["runs"] == 2
    # rows done before the crash keep their measurements; ranks stay unique.
    before = {r["id"]: r for r in saved.to_pylist()}
    for row in table.to_pylist():
        if row["id"] in before:
            assert row["e2e_ms"] == pytest.approx(before[row["id"]]["finish_ms"])
    assert len(set(table.column("rank").to_pylist())) == N


def test_hung_engine_stops_the_job_after_the_stall_timeout_and_resume_finishes_it(paths):
    with pytest.raises(EngineDied) as info:
        run_job(_config(paths, stall_timeout=0.2), engine=StubEngine(hang_after=4))
    assert info.value.exit_code == 3
    assert "stall timeout" in info.value.message and "--resume" in info.value.message
    assert "--stall-timeout 0.2" in info.value.message  # the resume command keeps the option
    saved = load_parts(checkpoint.parts_dir_for(paths[1]))
    assert sorted(saved.column("id").to_pylist()) == [f"q{i:02d}" for i in range(4)]

    run_job(_config(paths, resume=True), engine=StubEngine())
    _check_complete(paths[1])


def test_disk_full_while_checkpointing_loses_nothing_saved(paths, monkeypatch):
    real = checkpoint.write_part_file
    calls = []

    def fill_disk_on_second_part(table, path):
        calls.append(path)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(table, path)

    monkeypatch.setattr(checkpoint, "write_part_file", fill_disk_on_second_part)
    engine = StubEngine()
    with pytest.raises(CheckpointWriteError) as info:
        run_job(_config(paths), engine=engine)
    assert info.value.exit_code != 0
    assert "no space left on device" in info.value.message and "--resume" in info.value.message
    assert engine.stopped
    parts = checkpoint.parts_dir_for(paths[1])
    assert load_parts(parts).column("id").to_pylist() == ["q00", "q01"]

    monkeypatch.setattr(checkpoint, "write_part_file", real)
    run_job(_config(paths, resume=True), engine=StubEngine())
    _check_complete(paths[1])


def test_disk_full_on_the_final_output_keeps_the_parts(paths, monkeypatch):
    def disk_full(table, path):
        raise OutputError(f"cannot write {path} (No space left on device).")

    monkeypatch.setattr(run_step, "write_parquet_atomic", disk_full)
    with pytest.raises(OutputWriteError, match="--resume"):
        run_job(_config(paths), engine=StubEngine())
    parts = checkpoint.parts_dir_for(paths[1])
    assert load_parts(parts).num_rows == N

    monkeypatch.undo()
    engine = StubEngine()
    run_job(_config(paths, resume=True), engine=engine)
    assert engine.submitted == []  # everything was checkpointed: nothing runs again
    _check_complete(paths[1])


def test_parts_of_an_earlier_run_need_resume(paths):
    with pytest.raises(EngineDied):
        run_job(_config(paths), engine=StubEngine(die_after=3))
    with pytest.raises(CheckpointError, match="--resume"):
        run_job(_config(paths), engine=StubEngine())


def test_resume_with_another_input_file_is_refused(paths):
    with pytest.raises(EngineDied):
        run_job(_config(paths), engine=StubEngine(die_after=3))
    src, _ = paths
    pq.write_table(pa.table({"prompt": ["a different file"]}), src)
    with pytest.raises(CheckpointError, match="different input file"):
        run_job(_config(paths, resume=True), engine=StubEngine())


class _SignalAfter(StubEngine):
    """Sends this process a signal once ``after`` requests finished (like a user's Ctrl-C)."""

    def __init__(self, signum, after, **kw):
        super().__init__(**kw)
        self.signum, self.after = signum, after

    def poll(self, timeout):
        events = super().poll(timeout)
        if self.finished == self.after and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return events


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_flushes_stops_and_prints_the_resume_command(paths, signum, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/bin/sajax-batch", "in.parquet", "--out", "o.parquet"])
    previous = signal.getsignal(signum)
    engine = _SignalAfter(signum, after=5)
    with pytest.raises(JobInterrupted) as info:
        run_job(_config(paths, checkpoint_rows=100), engine=engine)
    assert info.value.exit_code == 128 + signum
    assert "sajax-batch in.parquet --out o.parquet --resume" in info.value.message
    assert engine.stopped
    assert signal.getsignal(signum) == previous  # handlers are restored
    saved = load_parts(checkpoint.parts_dir_for(paths[1]))
    assert saved.num_rows == 5  # flushed on the way out, though no part was due

    run_job(_config(paths, resume=True), engine=StubEngine())
    _check_complete(paths[1])


def test_resume_command_without_argv(paths, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["python"])
    cmd = job.resume_command(_config(paths, engine="sim", slots=4))
    src, out = paths
    assert cmd.startswith(f"sajax-batch {src} --out {out} --engine sim --policy fcfs")
    assert "--slots 4" in cmd and cmd.count("--resume") == 1 and "--quiet" in cmd
