"""The job wiring on the sim engine: plans, predicted vs measured, summary JSON, output columns."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_runner import job
from batch_runner.engines.sim import SimEngine
from batch_runner.job import JobConfig, make_plan, run_job, run_step
from batch_runner.requests import read_requests
from batch_runner.results import OUTPUT_COLUMNS
from sajax.profiles import load_profile

N = 40


@pytest.fixture
def src(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "requests.parquet"
    pq.write_table(
        pa.table(
            {
                "prompt": ["w" * int(k) for k in rng.integers(20, 3000, N)],
                "max_new_tokens": rng.integers(2, 80, N),
                "slo_e2e_ms": rng.uniform(2e3, 4e4, N),
                "weight": rng.uniform(0.5, 2.0, N),
                "task": rng.choice(["a", "b"], N),
                # hints (some null, some 0, some above the cap) and ignore_eos: the planner's
                # output lengths must be the sim engine's, or predictions would not match.
                "output_tokens_hint": pa.array(
                    [None if i % 3 == 0 else int(k) for i, k in enumerate(rng.integers(0, 120, N))],
                    type=pa.int64(),
                ),
                "ignore_eos": [i % 5 == 0 for i in range(N)],
            }
        ),
        path,
    )
    return path


@pytest.mark.parametrize("policy", ["fcfs", "sjf", "edf", "slack"])
def test_heuristic_plans_are_permutations_with_exact_predictions(src, tmp_path, policy):
    out = tmp_path / "out.parquet"
    summary = run_job(JobConfig(input=src, out=out, engine="sim", policy=policy, quiet=True))
    table = pq.read_table(out)
    assert sorted(table.column("rank").to_pylist()) == list(range(N))
    # The sim engine is the reference simulator the predictions come from, so they agree.
    predicted = np.asarray(table.column("predicted_e2e_ms").to_pylist(), float)
    measured = np.asarray(table.column("e2e_ms").to_pylist(), float)
    np.testing.assert_allclose(predicted, measured, rtol=1e-5)
    assert summary["plan"]["policy"] == policy
    assert summary["predicted_e2e_error"]["rows"] == N


def test_orders_differ_by_policy(src):
    table = read_requests(src).table
    engine = SimEngine(load_profile("default"))
    orders = {
        p: make_plan(table, engine, JobConfig(input=src, out=src, policy=p)).order
        for p in ("fcfs", "sjf")
    }
    assert list(orders["fcfs"]) == list(range(N))
    assert sorted(orders["sjf"]) == list(range(N)) and list(orders["sjf"]) != list(range(N))


def test_slots_override_the_cap(src):
    table = read_requests(src).table
    engine = SimEngine(load_profile("default"))
    plan = make_plan(table, engine, JobConfig(input=src, out=src, policy="fcfs", slots=2))
    assert plan.inflight_cap == 2


def test_output_and_summary_json(src, tmp_path):
    out = tmp_path / "o" / "results.parquet"
    sj = tmp_path / "summary.json"
    summary = run_job(
        JobConfig(input=src, out=out, engine="sim", policy="fcfs", quiet=True, summary_json=sj)
    )
    table = pq.read_table(out)
    assert table.column_names[-len(OUTPUT_COLUMNS) :] == OUTPUT_COLUMNS.names
    assert set(table.column("engine").to_pylist()) == {"sim"}
    assert set(table.column("output_text").to_pylist()) == {""}
    on_disk = json.loads(sj.read_text())  # strict JSON (no NaN)
    assert on_disk == summary
    for key in ("rows", "errors", "attainment", "attainment_per_task", "G", "ttft_ms", "tpot_ms"):
        assert key in summary
    assert summary["engine"] == "sim" and summary["profile"] == "default"
    assert set(summary["attainment_per_task"]) == {"a", "b"}
    assert 0.0 <= summary["attainment"] <= 1.0


def test_resume_with_everything_done_needs_no_engine(src, tmp_path, monkeypatch):
    out = tmp_path / "results.parquet"
    cfg = JobConfig(input=src, out=out, engine="sim", policy="fcfs", quiet=True)

    def no_output(table, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_step, "write_parquet_atomic", no_output)
    with pytest.raises(job.OutputWriteError):
        run_job(cfg)
    monkeypatch.undo()

    def no_engine(config):
        raise AssertionError("no engine should be made when every row is checkpointed")

    monkeypatch.setattr(run_step, "make_engine", no_engine)
    cfg.resume = True
    summary = run_job(cfg)
    assert summary["rows"] == N and summary["engine"] == "sim"
    assert pq.read_table(out).num_rows == N
