"""Calibration: recover known engine parameters and length distributions from generated data."""

from __future__ import annotations

import tomllib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_runner.calibrate import (
    calibrate_command,
    dumps_toml,
    fit_from_iteration_log,
    fit_from_request_times,
    fit_iteration_model,
    fit_output_lengths,
    nonnegative_lstsq,
    read_history,
)
from batch_runner.engines.llamacpp_batch import IterationRecord
from batch_runner.output_lengths import (
    fit_length_distribution,
    load_output_length_predictor,
)
from sajax.engine_model import make_engine_model
from sajax.profiles import load_profile
from sajax.refsim import reference_simulate

TRUE = {"a_ms": 6.8, "b_ms": 3.6, "c_ms": 0.004, "d_ms": 2.5}


def iteration_log(rng, n=400, noise=0.02, stalls=0):
    """Iterations of a continuous-batching engine with known a, b, c, d (+ relative noise)."""
    decode = rng.integers(0, 5, n)
    prefill = rng.choice([0, 0, 0, 12, 100, 512 - 4], n)
    context = rng.integers(0, 4 * 900, n)
    sampled = decode + (prefill > 0) * rng.integers(0, 2, n)  # some chunks end their prompt
    ms = TRUE["a_ms"] + TRUE["b_ms"] * (decode + prefill) + TRUE["c_ms"] * context
    ms = ms + TRUE["d_ms"] * sampled
    ms = ms * (1 + noise * rng.standard_normal(n))
    ms[rng.choice(n, stalls, replace=False)] += rng.uniform(200, 2000, stalls)  # other load
    return [
        IterationRecord(0.0, t / 1000, t / 1000, int(d), int(p), int(c), int(d) + (p > 0), int(s))
        for t, d, p, c, s in zip(ms, decode, prefill, context, sampled, strict=True)
    ]


def test_nonnegative_lstsq_matches_lstsq_inside_and_clamps_outside():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (50, 3))
    beta = np.array([1.0, 2.0, 3.0])
    assert np.allclose(nonnegative_lstsq(x, x @ beta), beta)
    got = nonnegative_lstsq(x, x @ np.array([1.0, -2.0, 3.0]))
    assert np.all(got >= 0) and got[1] == 0.0
    # Optimal among feasible points: no random feasible point does better.
    cost = np.sum((x @ got - x @ np.array([1.0, -2.0, 3.0])) ** 2)
    for _ in range(200):
        other = np.abs(got + rng.normal(0, 0.3, 3))
        assert np.sum((x @ other - x @ np.array([1.0, -2.0, 3.0])) ** 2) >= cost - 1e-9


def test_recovers_a_b_c_d_from_an_iteration_log():
    fit = fit_from_iteration_log(iteration_log(np.random.default_rng(1)))
    assert fit.a_ms == pytest.approx(TRUE["a_ms"], rel=0.1)
    assert fit.b_ms == pytest.approx(TRUE["b_ms"], rel=0.02)
    assert fit.c_ms == pytest.approx(TRUE["c_ms"], rel=0.25)
    assert fit.d_ms == pytest.approx(TRUE["d_ms"], rel=0.15)
    assert fit.r2 > 0.99 and fit.mean_abs_rel_error < 0.05


def test_robust_fit_ignores_iterations_stalled_by_other_load():
    log = iteration_log(np.random.default_rng(2), stalls=40)
    robust = fit_from_iteration_log(log)
    plain = fit_iteration_model(
        [r.decode_tokens for r in log],
        [r.prefill_tokens for r in log],
        [r.context_tokens for r in log],
        [r.seconds for r in log],
        sampled_rows=[r.sampled_rows for r in log],
        robust=False,
    )
    assert 30 <= robust.outliers <= 45  # stalls small next to a long prefill may stay in
    assert robust.a_ms == pytest.approx(TRUE["a_ms"], rel=0.15)
    assert robust.b_ms == pytest.approx(TRUE["b_ms"], rel=0.03)
    assert abs(plain.b_ms - TRUE["b_ms"]) > 5 * abs(robust.b_ms - TRUE["b_ms"])
    assert plain.mean_abs_rel_error > 3 * robust.mean_abs_rel_error


def test_recovers_a_b_c_d_exactly_from_request_times_of_a_job():
    rng = np.random.default_rng(3)
    n = 30
    inp, out = rng.integers(10, 700, n), rng.integers(1, 120, n)
    order = rng.permutation(n)
    model = make_engine_model(slots=3, token_budget=256, **TRUE)
    t = reference_simulate(order, inp, out, model)
    fit = fit_from_request_times(
        order, inp, out, t.first_token_ms, t.finish_ms, slots=3, token_budget=256
    )
    for k, v in TRUE.items():
        assert getattr(fit, k) == pytest.approx(v, rel=1e-6)
    assert fit.rows == 2 * n


def test_lognormal_parameters_are_recovered():
    rng = np.random.default_rng(4)
    y = np.rint(rng.lognormal(4.5, 0.7, 20_000))
    d = fit_length_distribution(y)
    assert d.lognormal_mu == pytest.approx(4.5, abs=0.02)
    assert d.lognormal_sigma == pytest.approx(0.7, abs=0.02)
    assert d.quantiles["p50"] == pytest.approx(np.exp(4.5), rel=0.03)
    assert d.rows == 20_000 and d.capped_share == 0.0


def history_table(rng, n=90, engine="llamacpp"):
    """A results file of a real-engine job whose timings follow TRUE on 4 slots."""
    task = np.array(["chat", "code", "classification"])[np.arange(n) % 3]
    out = np.where(
        task == "chat",
        np.rint(rng.lognormal(4.0, 0.5, n)),
        np.where(task == "code", rng.integers(50, 120, n), rng.integers(1, 6, n)),
    ).astype(np.int64)
    inp = rng.integers(20, 300, n)
    order = rng.permutation(n)
    t = reference_simulate(order, inp, out, make_engine_model(4, 512, **TRUE))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    error = np.zeros(n, bool)
    error[5] = True
    return pa.table(
        {
            "id": [str(i) for i in range(n)],
            "task": task,
            "input_tokens": inp,
            "output_tokens": out,
            "finish_reason": ["length" if o >= 120 else "stop" for o in out],
            "error": pa.array(["x" if e else None for e in error], pa.string()),
            "rank": rank,
            "ttft_ms": t.first_token_ms,
            "e2e_ms": t.finish_ms,
            "engine": [engine] * n,
        }
    )


def test_output_lengths_per_task_skip_error_rows():
    table = history_table(np.random.default_rng(5))
    predictor = fit_output_lengths(table)
    assert set(predictor.tasks) == {"chat", "code", "classification"}
    assert (
        predictor.tasks["chat"].rows
        + predictor.tasks["code"].rows
        + predictor.tasks["classification"].rows
        == table.num_rows - 1
    )
    assert 50 <= predictor.predict("code") <= 120
    assert predictor.predict("unknown", default=7) == 7
    draws = predictor.sample(np.random.default_rng(0), "chat", 1000)
    chat = predictor.tasks["chat"]
    assert abs(chat.lognormal_mu - 4.0) < 0.3  # 30 rows of LogNormal(4.0, 0.5)
    assert draws.min() >= 1 and abs(np.log(draws).mean() - chat.lognormal_mu) < 0.06


def test_calibrate_history_writes_a_loadable_profile_and_predictor(tmp_path):
    rng = np.random.default_rng(6)
    paths = []
    for k in range(2):
        p = tmp_path / f"results{k}.parquet"
        pq.write_table(history_table(rng), p)
        paths.append(p)
    out = tmp_path / "calibrated.toml"
    calibrate_command(history=paths, out=out, slots=4, quiet=True)
    model = load_profile(out)
    assert float(model.a_ms) == pytest.approx(TRUE["a_ms"], rel=1e-3)
    assert float(model.b_ms) == pytest.approx(TRUE["b_ms"], rel=1e-3)
    assert int(model.slots) == 4
    predictor = load_output_length_predictor(out)
    assert set(predictor.tasks) == {"chat", "code", "classification"}
    doc = tomllib.loads(out.read_text())
    assert doc["fit"]["rows"] > 0 and doc["history"] == [str(p) for p in paths]


def test_calibrate_history_of_simulated_runs_fits_lengths_only(tmp_path):
    p = tmp_path / "sim.parquet"
    pq.write_table(history_table(np.random.default_rng(7), engine="sim"), p)
    out = tmp_path / "lengths.toml"
    doc = calibrate_command(history=[p], out=out, quiet=True)
    assert "model" not in doc and "output_lengths" in doc
    assert load_output_length_predictor(out).predict("chat") >= 1
    with pytest.raises(ValueError):
        load_profile(out)  # no [model]: not an engine profile
    assert read_history([p]).num_rows == 90


def test_dumps_toml_round_trips():
    doc = {
        "name": 'a "quoted" name',
        "n": 3,
        "x": 0.1,
        "flag": True,
        "list": ["a", "b"],
        "model": {"a_ms": 1.5, "slots": 4},
        "output_lengths": {"chat": {"p50": 12.0}, "code-x": {"p50": 3.0}},
    }
    assert tomllib.loads(dumps_toml(doc)) == doc


@pytest.mark.llamacpp
@pytest.mark.slow
def test_real_engine_sweep_gives_a_sane_fit(tmp_path):
    pytest.importorskip("llama_cpp")
    from batch_runner.engines.models import resolve_model_path

    try:
        resolve_model_path(None)
    except Exception as e:  # the default model is not installed
        pytest.skip(f"no default model: {e}")
    out = tmp_path / "cpu.toml"
    doc = calibrate_command(
        engine="llamacpp", out=out, slots=2, sweep=((1, 2), (16, 96), (6,)), quiet=True
    )
    fit = doc["fit"]
    model = load_profile(out)
    # A forward token of a 135M model costs well under 50 ms on any CPU this runs on, and an
    # iteration's fixed cost is positive; the fit explains most of the variation.
    assert 0 < float(model.b_ms) < 50 and float(model.a_ms) >= 0
    assert fit["rows"] >= 10


def test_cli_history_alone_runs_no_engine(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from batch_runner import calibrate
    from batch_runner.cli import main

    def no_sweep(*a, **k):
        raise AssertionError("--history alone must not run a sweep")

    monkeypatch.setattr(calibrate, "run_sweep", no_sweep)
    p = tmp_path / "r.parquet"
    pq.write_table(history_table(np.random.default_rng(8)), p)
    out = tmp_path / "c.toml"
    result = CliRunner().invoke(main, ["calibrate", "--history", str(p), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "output lengths chat" in result.output
    assert float(load_profile(out).b_ms) == pytest.approx(TRUE["b_ms"], rel=1e-3)


def test_cli_sim_sweep_gives_back_the_simulators_profile(tmp_path):
    from click.testing import CliRunner

    from batch_runner.cli import main

    out = tmp_path / "sim.toml"
    result = CliRunner().invoke(main, ["calibrate", "--engine", "sim", "--out", str(out)])
    assert result.exit_code == 0, result.output
    fitted, shipped = load_profile(out), load_profile("default")
    for name in ("a_ms", "b_ms", "c_ms"):
        assert float(getattr(fitted, name)) == pytest.approx(
            float(getattr(shipped, name)), rel=1e-4
        )
