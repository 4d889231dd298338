"""Checkpoints and --resume: parts on disk, fingerprints, and killed jobs that resume exactly once.

The end-to-end tests run ``sajax-batch --engine sim`` in a subprocess, paced so that it runs for
a few wall seconds (``SAJAX_SIM_PACE``), kill it (SIGKILL, SIGINT, SIGTERM) after some parts are
on disk, resume, and compare with a clean run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_runner import checkpoint
from batch_runner.checkpoint import (
    MEASUREMENT_SCHEMA,
    Checkpoint,
    CheckpointError,
    Fingerprint,
    load_parts,
    parts_dir_for,
)


def _row(rid, **kw):
    row = {name: None for name in MEASUREMENT_SCHEMA.names}
    row.update(id=rid, rank=0, run=0, attempts=1, submit_ms=0.0, first_token_ms=1.0)
    row.update(finish_ms=2.0, output_text="", engine="sim")
    row.update(kw)
    return row


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"]}), path)
    return path


def test_parts_are_written_every_k_rows_and_read_back(tmp_path, input_file):
    d = tmp_path / "out.parquet.parts"
    ck = Checkpoint.create(
        d, Fingerprint.of(input_file), every_rows=2, every_seconds=1e9, min_seconds=0.0
    )
    for i in range(5):
        ck.add(_row(f"r{i}"))
    assert sorted(p.name for p in d.glob("part-*.parquet")) == [
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert ck.buffered == 1
    ck.flush()
    table = load_parts(d)
    assert table.schema == MEASUREMENT_SCHEMA
    assert sorted(table.column("id").to_pylist()) == [f"r{i}" for i in range(5)]
    assert json.loads((d / "manifest.json").read_text())["input"]["rows"] == 3


def test_time_based_flush(tmp_path, input_file):
    d = tmp_path / "p"
    ck = Checkpoint.create(d, Fingerprint.of(input_file), every_rows=100, every_seconds=0.0)
    ck.add(_row("a"))
    assert ck.buffered == 0 and len(list(d.glob("part-*.parquet"))) == 1


def test_row_triggered_parts_are_rate_limited(tmp_path, input_file):
    d = tmp_path / "p"
    ck = Checkpoint.create(d, Fingerprint.of(input_file), every_rows=1, min_seconds=0.3)
    for i in range(5):  # all within a few ms: the first part waits for min_seconds
        ck.add(_row(f"r{i}"))
    assert ck.buffered == 5 and not list(d.glob("part-*.parquet"))
    time.sleep(0.35)
    ck.add(_row("r5"))
    assert ck.buffered == 0 and len(list(d.glob("part-*.parquet"))) == 1


def test_load_keeps_the_first_copy_and_ignores_temp_files(tmp_path, input_file):
    d = tmp_path / "p"
    ck = Checkpoint.create(d, Fingerprint.of(input_file), every_rows=1, min_seconds=0.0)
    ck.add(_row("a", finish_ms=5.0))
    ck.add(_row("a", finish_ms=7.0))
    (d / ".part-00003.parquet.tmp").write_bytes(b"half a part")
    table = load_parts(d)
    assert table.column("id").to_pylist() == ["a"]
    assert table.column("finish_ms").to_pylist() == [5.0]


def test_create_refuses_parts_of_an_unfinished_run(tmp_path, input_file):
    d = tmp_path / "p"
    Checkpoint.create(d, Fingerprint.of(input_file), every_rows=1, min_seconds=0).add(_row("a"))
    with pytest.raises(CheckpointError, match="--resume"):
        Checkpoint.create(d, Fingerprint.of(input_file))


def test_open_continues_numbering_and_counts_runs(tmp_path, input_file):
    d = tmp_path / "p"
    fp = Fingerprint.of(input_file)
    Checkpoint.create(d, fp, every_rows=1, min_seconds=0).add(_row("a"))
    ck = Checkpoint.open(d, fp, every_rows=1, min_seconds=0)
    assert ck.run == 1
    ck.add(_row("b"))
    assert (d / "part-00002.parquet").exists()
    assert Checkpoint.open(d, fp).run == 2


def test_open_refuses_a_different_input(tmp_path, input_file):
    d = tmp_path / "p"
    Checkpoint.create(d, Fingerprint.of(input_file), every_rows=1, min_seconds=0).add(_row("a"))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c", "d"]}), other)
    with pytest.raises(CheckpointError, match="different input file"):
        Checkpoint.open(d, Fingerprint.of(other))
    pq.write_table(pa.table({"prompt": ["x", "y", "z"], "n": [1, 2, 3]}), input_file)
    with pytest.raises(CheckpointError, match="schema_hash"):
        Checkpoint.open(d, Fingerprint.of(input_file))


def test_write_error_keeps_what_was_saved(tmp_path, input_file, monkeypatch):
    d = tmp_path / "p"
    ck = Checkpoint.create(d, Fingerprint.of(input_file), every_rows=1, min_seconds=0)
    ck.add(_row("a"))

    def disk_full(table, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_part_file", disk_full)
    with pytest.raises(checkpoint.CheckpointWriteError, match="no space left on device"):
        ck.add(_row("b"))
    assert load_parts(d).column("id").to_pylist() == ["a"]


def test_parts_dir_name():
    assert parts_dir_for("x/results.parquet") == Path("x/results.parquet.parts")


# -- end to end: sajax-batch --engine sim, killed and resumed ---------------------------------

N_ROWS = 400
SAJAX_BATCH = Path(sys.executable).with_name("sajax-batch")


@pytest.fixture(scope="module")
def job_input(tmp_path_factory):
    """A request file and a clean (never interrupted) in-process run of it."""
    from batch_runner.job import JobConfig, run_job

    d = tmp_path_factory.mktemp("job")
    src = d / "requests.parquet"
    rng = np.random.default_rng(0)
    pq.write_table(
        pa.table(
            {
                "id": [f"req-{i:04d}" for i in range(N_ROWS)],
                "prompt": ["w" * int(n) for n in rng.integers(20, 2000, N_ROWS)],
                "max_new_tokens": rng.integers(4, 64, N_ROWS),
                "task": rng.choice(["chat", "code", "cls"], N_ROWS),
                "slo_e2e_ms": rng.uniform(1e3, 2e5, N_ROWS),
                "note": [f"n{i}" for i in range(N_ROWS)],
            }
        ),
        src,
    )
    clean = d / "clean.parquet"
    summary = run_job(JobConfig(input=src, out=clean, engine="sim", policy="fcfs", quiet=True))
    return src, pq.read_table(clean), summary


def _start(src, out, pace, *extra):
    env = dict(os.environ, SAJAX_SIM_PACE=str(pace))
    cmd = [str(SAJAX_BATCH), str(src), "--out", str(out), "--engine", "sim", "--policy", "fcfs"]
    return subprocess.Popen(
        [*cmd, "--quiet", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_parts(proc, parts, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(parts.glob("part-*.parquet"))) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the job ended before {n} parts were written: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {n} parts in {parts} after {timeout} s")


def _resume(src, out):
    cmd = [str(SAJAX_BATCH), str(src), "--out", str(out), "--engine", "sim", "--policy", "fcfs"]
    summary_path = out.with_suffix(".summary.json")
    env = {k: v for k, v in os.environ.items() if k != "SAJAX_SIM_PACE"}
    done = subprocess.run(
        [*cmd, "--quiet", "--resume", "--summary-json", str(summary_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(summary_path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])  # SIGTERM: test_faults, in-process
def test_killed_job_resumes_with_every_row_exactly_once(job_input, tmp_path, how):
    src, clean, clean_summary = job_input
    out = tmp_path / "results.parquet"
    parts = checkpoint.parts_dir_for(out)
    pace = clean_summary["makespan_ms"] / 1000.0 / 8.0  # the whole job: about 8 wall seconds
    proc = _start(src, out, pace)
    _wait_for_parts(proc, parts, 2)
    signum = getattr(signal, how)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + signum, stderr
        assert "Resume with" in stderr and "--resume" in stderr
    assert not out.exists()
    saved = load_parts(parts)
    assert 0 < saved.num_rows < N_ROWS

    summary = _resume(src, out)
    result = pq.read_table(out)
    assert result.schema == clean.schema
    assert result.column("id").to_pylist() == clean.column("id").to_pylist()
    assert result.drop_columns(_output_names()).equals(clean.drop_columns(_output_names()))
    assert len(set(result.column("rank").to_pylist())) == N_ROWS
    assert result.column("error").null_count == N_ROWS
    assert summary["runs"] == 2 and summary["rows"] == N_ROWS
    # Rows checkpointed before the kill keep their measurements: nothing ran twice.
    before = dict(zip(saved["id"].to_pylist(), saved["finish_ms"].to_pylist(), strict=True))
    after = dict(zip(result["id"].to_pylist(), result["e2e_ms"].to_pylist(), strict=True))
    for rid, finish_ms in before.items():
        assert after[rid] == pytest.approx(finish_ms, rel=1e-6)
    assert not parts.exists()


def _output_names():
    from batch_runner.results import OUTPUT_COLUMNS

    return OUTPUT_COLUMNS.names
