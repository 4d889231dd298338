"""The job's self-calibration: the probe's fit, its budget, and the per-machine cache."""

from __future__ import annotations

import datetime
import re
import tomllib

import numpy as np
import pytest

from batch_runner import probe
from batch_runner.engines.sim import SimEngine
from batch_runner.engines.sim_drift import make_drift
from batch_runner.errors import ConfigError
from sajax.engine_model import EngineModel


def _model():
    return EngineModel(
        slots=np.int32(4),
        token_budget=np.int32(256),
        a_ms=np.float32(5.0),
        b_ms=np.float32(0.5),
        c_ms=np.float32(0.002),
        kv_capacity=np.int32(0),
        d_ms=np.float32(0.8),  # a sampled row costs more than a prompt token, as on llama.cpp
    )


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "calibration"


@pytest.mark.parametrize("log_iterations", [True, False])
def test_the_probe_recovers_the_engines_true_speed(log_iterations):
    # the sim runs 3x slower than the model the job would plan with: the probe must see it
    engine = SimEngine(_model(), drift=make_drift(speed=[[0, 3.0]]), log_iterations=log_iterations)
    engine.start()
    cal = probe.run_probe(engine, _model(), budget_s=5.0)
    m = cal.model
    got = (float(m.a_ms), float(m.b_ms), float(m.c_ms), float(m.d_ms))
    assert got == pytest.approx((15.0, 1.5, 0.006, 2.4), rel=1e-3)
    assert cal.source == "probe" and cal.points >= 3
    assert cal.fit["mean_abs_rel_error"] < 1e-6


def test_auto_probes_once_then_reuses_the_cached_fit(cache):
    engine = SimEngine(_model(), log_iterations=True)
    engine.start()
    first = probe.calibrate_for_job(engine, "auto", _model(), predicted_job_s=400.0)
    assert first.source == "probe" and first.path is not None and first.path.parent == cache
    doc = tomllib.loads(first.path.read_text())
    assert doc["key"]["engine"] == "sim" and doc["key"]["slots"] == 4
    assert "mean_abs_rel_error" in doc["fit"] and doc["calibrated_at"]
    again = probe.calibrate_for_job(engine, "auto", _model(), predicted_job_s=400.0)
    assert again.source == "cache" and again.path == first.path
    assert float(again.model.b_ms) == pytest.approx(float(first.model.b_ms))
    forced = probe.calibrate_for_job(engine, "always", _model(), predicted_job_s=400.0)
    assert forced.source == "probe"


def test_a_stale_or_poor_fit_is_not_reused(cache):
    engine = SimEngine(_model(), log_iterations=True)
    engine.start()
    cal = probe.calibrate_for_job(engine, "auto", _model(), predicted_job_s=400.0)
    text = cal.path.read_text()
    old = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)).isoformat()
    cal.path.write_text(text.replace(cal.calibrated_at, old))
    stale = probe.calibrate_for_job(engine, "auto", _model(), predicted_job_s=400.0)
    assert stale.source == "probe"
    text = cal.path.read_text()
    cal.path.write_text(re.sub(r"mean_abs_rel_error = \S+", "mean_abs_rel_error = 0.9", text))
    key = probe.probe_key(engine, 4)
    assert probe.load_cached(key) is None
    other = dict(key, slots=8)
    assert probe.cache_path(other) != probe.cache_path(key)


def test_a_short_job_is_not_probed_and_never_means_never():
    engine = SimEngine(_model(), log_iterations=True)
    engine.start()
    short = probe.calibrate_for_job(engine, "auto", _model(), predicted_job_s=10.0)
    assert short.source.startswith("shipped") and "too short" in short.source
    assert short.model == _model()
    never = probe.calibrate_for_job(engine, "never", _model(), predicted_job_s=1e6)
    assert never.source == "shipped (--calibrate never)" and never.probe_seconds == 0
    with pytest.raises(ConfigError, match="--calibrate"):
        probe.calibrate_for_job(engine, "sometimes", _model(), predicted_job_s=1.0)


def test_an_unwritable_cache_still_gives_a_fit(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(probe.CACHE_ENV, str(blocker))
    engine = SimEngine(_model(), log_iterations=True)
    engine.start()
    cal = probe.calibrate_for_job(engine, "always", _model(), predicted_job_s=400.0)
    assert cal.source == "probe" and cal.path is None
