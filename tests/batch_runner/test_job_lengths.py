"""The job plans with predicted output lengths, and its summary carries plan vs FCFS."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batch_runner.calibrate import dumps_toml
from batch_runner.engines.sim import SimEngine
from batch_runner.errors import UserError
from batch_runner.job import JobConfig, _predicted_output_tokens, make_plan, run_job
from batch_runner.output_lengths import (
    OutputLengthPredictor,
    fit_length_distribution,
    predictor_tables,
)
from batch_runner.requests import read_requests
from sajax.engine_model import engine_model_to_dict
from sajax.profiles import load_profile
from sajax.refsim import reference_simulate

N = 24
CHAT_MEDIAN = 9  # tokens
CODE_MEDIAN = 200  # above every row's cap: the cap wins


def _predictor() -> OutputLengthPredictor:
    return OutputLengthPredictor(
        tasks={
            "chat": fit_length_distribution(np.array([7, 8, CHAT_MEDIAN, 10, 11])),
            "code": fit_length_distribution(np.array([CODE_MEDIAN] * 3)),
        }
    )


@pytest.fixture
def lengths_toml(tmp_path):
    path = tmp_path / "lengths.toml"
    path.write_text(dumps_toml(predictor_tables(_predictor())))
    return path


@pytest.fixture
def src(tmp_path):
    """Rows of three tasks; a third have a hint, a fifth run under ignore_eos."""
    rng = np.random.default_rng(3)
    path = tmp_path / "requests.parquet"
    pq.write_table(
        pa.table(
            {
                "prompt": ["w" * int(k) for k in rng.integers(40, 800, N)],
                "task": [("chat", "code", "other")[i % 3] for i in range(N)],
                "max_new_tokens": rng.integers(20, 64, N),
                "output_tokens_hint": pa.array(
                    [int(k) if i % 4 == 1 else None for i, k in enumerate(rng.integers(2, 30, N))],
                    type=pa.int64(),
                ),
                "ignore_eos": [i % 5 == 0 for i in range(N)],
                "slo_e2e_ms": rng.uniform(1e3, 2e4, N),
            }
        ),
        path,
    )
    return path


def _expected(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Output lengths by the rule, written out row by row."""
    out, source = [], []
    for row in table.to_pylist():
        cap, hint = row["max_new_tokens"], row["output_tokens_hint"]
        if row["ignore_eos"]:
            out.append(cap), source.append("ignore_eos")
        elif hint is not None:
            out.append(max(1, min(hint, cap))), source.append("hint")
        elif row["task"] == "chat":
            out.append(min(CHAT_MEDIAN, cap)), source.append("predicted")
        elif row["task"] == "code":
            out.append(min(CODE_MEDIAN, cap)), source.append("predicted")
        else:  # a task the predictor does not know
            out.append(cap), source.append("max_new_tokens")
    return np.asarray(out), source


def test_lengths_follow_the_order_of_preference(src):
    table = read_requests(src).table
    got = _predicted_output_tokens(table, _predictor())
    want, source = _expected(table)
    np.testing.assert_array_equal(got.tokens, want)
    assert got.source.tolist() == source
    assert {"ignore_eos", "hint", "predicted", "max_new_tokens"} == set(source)
    # without a predictor nothing is predicted: the cap stands in
    plain = _predicted_output_tokens(table)
    is_pred = got.source == "predicted"
    np.testing.assert_array_equal(
        plain.tokens[is_pred], table["max_new_tokens"].to_numpy()[is_pred]
    )
    np.testing.assert_array_equal(plain.tokens[~is_pred], got.tokens[~is_pred])
    assert np.all(got.tokens <= table["max_new_tokens"].to_numpy())


def test_fcfs_predictions_use_the_predicted_lengths(src, lengths_toml):
    table = read_requests(src).table
    engine = SimEngine(load_profile("default"))
    config = JobConfig(input=src, out=src, policy="fcfs", length_predictor=lengths_toml)
    plan = make_plan(table, engine, config)
    want, source = _expected(table)
    inp = np.asarray([engine.count_tokens(r) for r in _requests(table)])
    ref = reference_simulate(np.arange(N), inp, want, engine.model)
    np.testing.assert_allclose(plan.predicted_e2e_ms, ref.finish_ms, rtol=1e-9)
    counts = plan.info["output_lengths"]
    assert counts == {s: source.count(s) for s in set(source)}
    # predicted lengths are shorter than the caps, so the whole job is predicted to end sooner
    without = make_plan(table, engine, JobConfig(input=src, out=src, policy="fcfs"))
    assert np.nanmax(plan.predicted_e2e_ms) < np.nanmax(without.predicted_e2e_ms)


def _requests(table):
    from batch_runner.engines.base import SamplingParams
    from batch_runner.job import _engine_requests

    return _engine_requests(table, SamplingParams())


def test_profile_with_output_length_tables_is_a_predictor(src, tmp_path):
    """A `calibrate --history` profile ([model] + [output_lengths.*]) given as --profile."""
    model = {
        k: np.asarray(v).item() for k, v in engine_model_to_dict(load_profile("default")).items()
    }
    profile = tmp_path / "calibrated.toml"
    profile.write_text(dumps_toml({"name": "t", "model": model, **predictor_tables(_predictor())}))
    table = read_requests(src).table
    engine = SimEngine(load_profile("default"))
    plan = make_plan(
        table, engine, JobConfig(input=src, out=src, policy="fcfs", profile=str(profile))
    )
    assert plan.info["output_lengths"]["predicted"] == _expected(table)[1].count("predicted")
    shipped = make_plan(
        table, engine, JobConfig(input=src, out=src, policy="fcfs", profile="default")
    )
    assert "predicted" not in shipped.info["output_lengths"]


def test_a_predictor_file_without_tables_is_a_user_error(src, tmp_path):
    bad = tmp_path / "empty.toml"
    bad.write_text('name = "nothing here"\n')
    table = read_requests(src).table
    engine = SimEngine(load_profile("default"))
    with pytest.raises(UserError, match="output_lengths"):
        make_plan(table, engine, JobConfig(input=src, out=src, length_predictor=bad))


@pytest.mark.parametrize("policy", ["fcfs", "sjf"])
def test_summary_carries_predicted_plan_and_fcfs(src, tmp_path, policy):
    out = tmp_path / "out.parquet"
    summary = run_job(JobConfig(input=src, out=out, engine="sim", policy=policy, quiet=True))
    plan = summary["plan"]
    for key in ("attainment", "fcfs_attainment", "goodput", "fcfs_goodput", "mean_e2e_ms"):
        assert isinstance(plan[key], float), key
    # the sim engine is the reference simulator: the plan's predicted attainment is measured
    assert plan["attainment"] == pytest.approx(summary["attainment"], abs=1e-6)
    if policy == "fcfs":
        assert plan["fcfs_attainment"] == plan["attainment"]
    else:
        fcfs = run_job(
            JobConfig(
                input=src, out=tmp_path / "f.parquet", engine="sim", policy="fcfs", quiet=True
            )
        )
        assert plan["fcfs_attainment"] == pytest.approx(fcfs["attainment"], abs=1e-6)


def test_cli_length_predictor_option(src, tmp_path, lengths_toml):
    from batch_runner.cli import batch_main

    out, sj = tmp_path / "r.parquet", tmp_path / "s.json"
    args = [str(src), "--out", str(out), "--engine", "sim", "--policy", "fcfs", "-q"]
    args += ["--length-predictor", str(lengths_toml), "--summary-json", str(sj)]
    result = CliRunner().invoke(batch_main, args)
    assert result.exit_code == 0, result.output
    counts = json.loads(sj.read_text())["plan"]["output_lengths"]
    assert counts["predicted"] == _expected(read_requests(src).table)[1].count("predicted")
    missing = CliRunner().invoke(batch_main, [*args[:-4], "--length-predictor", "nope.toml"])
    assert missing.exit_code == 2
