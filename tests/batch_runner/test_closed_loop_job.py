"""The closed loop in whole jobs: the summary's calibration and re-plans, and a job killed
while it re-plans that --resume finishes with every row exactly once."""

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
from batch_runner.checkpoint import load_parts

SAJAX_BATCH = Path(sys.executable).with_name("sajax-batch")
N_ROWS = 60


@pytest.fixture(scope="module")
def job_input(tmp_path_factory):
    d = tmp_path_factory.mktemp("loopjob")
    src = d / "requests.parquet"
    rng = np.random.default_rng(0)
    pq.write_table(
        pa.table(
            {
                "id": [f"req-{i:03d}" for i in range(N_ROWS)],
                "prompt": ["w" * int(n) for n in rng.integers(20, 400, N_ROWS)],
                "max_new_tokens": rng.integers(20, 60, N_ROWS),
                "ignore_eos": [True] * N_ROWS,
                "slo_e2e_ms": rng.uniform(2e3, 2e4, N_ROWS),
            }
        ),
        src,
    )
    return src


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAJAX_SIM")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env["SAJAX_SIM_DRIFT"] = json.dumps({"speed": [[2.0, 2.0]]})
    env.update(extra)
    return env


def _cmd(src, out):
    return [str(SAJAX_BATCH), str(src), "--out", str(out), "--engine", "sim"]


LOOP_ARGS = ["--time-budget", "1", "--replan-every", "4", "--replan-budget", "1.5"]


@pytest.mark.slow
def test_summary_reports_calibration_and_replans(job_input, tmp_path):
    out, summary_path = tmp_path / "r.parquet", tmp_path / "s.json"
    done = subprocess.run(
        [
            *_cmd(job_input, out),
            *LOOP_ARGS,
            "--quiet",
            "--summary-json",
            str(summary_path),
            "--report",
            str(tmp_path / "r.html"),
        ],  # fmt: skip
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["calibration"]["source"] == "the sim engine's own profile"
    loop = summary["closed_loop"]
    assert loop["replans"] and loop["speed_source"] == "requests"
    assert loop["speed_scale"] == pytest.approx(2.0, rel=0.05)
    for r in loop["replans"]:
        assert {
            "t_s",
            "reason",
            "predicted_attainment_before",
            "predicted_attainment_after",
        } <= set(r)
    html = (tmp_path / "r.html").read_text()
    assert "Closed loop: predicted and measured attainment" in html and "Re-plans" in html


@pytest.mark.slow
def test_a_job_killed_during_a_replan_resumes_with_every_row_once(job_input, tmp_path):
    out = tmp_path / "results.parquet"
    parts = checkpoint.parts_dir_for(out)
    # paced: the job runs on the wall clock, so its re-plans run in a background thread
    proc = subprocess.Popen(
        [*_cmd(job_input, out), *LOOP_ARGS],
        env=_env(SAJAX_SIM_PACE="1.0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    seen = ""
    while True:  # the first re-plan that begins once some finished rows are on disk
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"the job ended without a re-plan after a checkpoint: {seen}")
        seen += line
        if "re-planning" in line and list(parts.glob("part-*.parquet")):
            break
        assert time.monotonic() < deadline, "no re-plan within 300 s"
    proc.send_signal(signal.SIGKILL)  # the re-plan (1.5 s of planning) has just begun
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = load_parts(parts)
    saved_ids = saved.column("id").to_pylist()
    assert 0 < len(saved_ids) < N_ROWS

    summary_path = tmp_path / "s.json"
    done = subprocess.run(
        [
            *_cmd(job_input, out),
            *LOOP_ARGS,
            "--quiet",
            "--resume",
            "--summary-json",
            str(summary_path),
        ],  # fmt: skip
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = pq.read_table(out)
    ids = result.column("id").to_pylist()
    assert ids == [f"req-{i:03d}" for i in range(N_ROWS)]  # every row once, input order
    assert result.column("error").null_count == N_ROWS
    assert len(set(result.column("rank").to_pylist())) == N_ROWS
    summary = json.loads(summary_path.read_text())
    assert summary["rows"] == N_ROWS
    # rows saved before the kill kept their measurements: nothing ran twice
    before = dict(zip(saved_ids, saved["finish_ms"].to_pylist(), strict=True))
    after = dict(zip(ids, result["e2e_ms"].to_pylist(), strict=True))
    for rid, finish_ms in before.items():
        assert after[rid] == pytest.approx(finish_ms, rel=1e-6)
    assert summary["runs"] == 2
    assert not parts.exists()
