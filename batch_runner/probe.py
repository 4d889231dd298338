"""Self-calibration before planning: a short probe on the job's own engine, cached per machine.

A job on a real engine with no ``--profile`` fits its iteration-time model on the engine it will
use (``--calibrate auto``, the default): a few small batches (batch sizes x prompt lengths,
``ignore_eos``, after two warm-up batches off the record) until the probe budget is spent, then
the fit of ``batch_runner.calibrate_fit`` (per iteration where the engine logs iterations, else
per request)::

    budget = min(max_seconds (20 s), share (5 %) x the job's predicted time)

The fit is cached as a profile TOML under ``$SAJAX_CACHE_DIR`` (default
``$XDG_CACHE_HOME/sajax`` or ``~/.cache/sajax``) ``/calibration/<key>.toml``, the key a hash of
(machine: host name, CPU model, core count; engine; model file: name and size; slots; token
budget; threads), with its fit error and date. ``auto`` reuses a cached fit while it is valid
(younger than ``max_age_days``, mean relative error at most ``max_error``), else probes;
``always`` probes; ``never`` plans with the shipped profile.

    cal = calibrate_for_job(engine, "auto", base_model, predicted_job_s=300.0)
    cal.model, cal.source          # "probe" | "cache" | "shipped (...)"
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import time
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from batch_runner.calibrate_fit import IterationFit, _fit, fit_from_iteration_log, schedule_basis
from batch_runner.calibrate_sweep import SweepPoint, _run_point
from batch_runner.errors import ConfigError
from batch_runner.profile_file import dumps_toml, profile_document
from sajax.engine_model import EngineModel, engine_model_from_mapping, engine_model_to_dict

CACHE_ENV = "SAJAX_CACHE_DIR"
MODES = ("auto", "always", "never")
MAX_PROBE_S = 20.0
PROBE_SHARE = 0.05
MIN_PROBE_S = 2.0  # below this budget the probe could not fit three parameters
MAX_AGE_DAYS = 7.0
MAX_ERROR = 0.25
WARMUP = (SweepPoint(1, 64, 4), SweepPoint(2, 16, 4))


class Calibration(NamedTuple):
    model: EngineModel
    source: str  # "probe" | "cache" | "shipped (why)"
    path: Path | None  # the cached file written or read
    fit: dict  # IterationFit fields (empty when nothing was fitted)
    calibrated_at: str  # ISO date of the fit ("" when none)
    probe_seconds: float  # time the probe took in this job (0 for a cached fit)
    points: int  # probe points run

    def as_dict(self) -> dict[str, Any]:
        m = engine_model_to_dict(self.model)
        return {
            "source": self.source,
            "path": str(self.path) if self.path else None,
            "fit": self.fit,
            "calibrated_at": self.calibrated_at,
            "probe_seconds": round(self.probe_seconds, 3),
            "points": self.points,
            "model": {k: m[k] for k in ("a_ms", "b_ms", "c_ms", "d_ms", "slots", "token_budget")},
        }


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "sajax") if xdg else str(Path.home() / ".cache" / "sajax")
    return Path(root) / "calibration"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_key(engine, slots: int) -> dict[str, Any]:
    """What a cached fit is valid for (module doc)."""
    model_file = getattr(engine, "model_path", None)
    if model_file is not None:
        path = Path(model_file)
        model = f"{path.name}:{path.stat().st_size if path.exists() else 0}"
    else:
        model = f"{engine.name}:{getattr(engine, 'profile', '')}"
    return {
        "machine": f"{platform.node()} | {_cpu_model()} | {os.cpu_count()} cores",
        "engine": engine.name,
        "model": model,
        "slots": int(slots),
        "token_budget": int(getattr(engine, "token_budget", 0) or 0),
        "threads": int(getattr(engine, "n_threads", 0) or 0),
    }


def cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{key['engine']}-{digest}.toml"


def load_cached(key: dict[str, Any], *, max_age_days=MAX_AGE_DAYS, max_error=MAX_ERROR):
    """The cached Calibration for ``key`` while it is valid, else None."""
    path = cache_path(key)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
        model = engine_model_from_mapping(doc["model"])
        fit = dict(doc.get("fit", {}))
        when = datetime.datetime.fromisoformat(doc["calibrated_at"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError):
        return None
    if doc.get("key") != key:
        return None
    age = datetime.datetime.now(datetime.UTC) - when
    if age.total_seconds() > max_age_days * 86400 or age.total_seconds() < 0:
        return None
    if not float(fit.get("mean_abs_rel_error", np.inf)) <= max_error:
        return None
    return Calibration(model, "cache", path, fit, doc["calibrated_at"], 0.0, 0)


def save(key: dict[str, Any], cal: Calibration) -> Path | None:
    """Write ``cal`` to the cache (atomically); None when the cache is not writable."""
    path = cache_path(key)
    doc = profile_document(
        name=path.stem,
        engine=key["engine"],
        llm=key["model"],
        model=engine_model_to_dict(cal.model),
        fit=None,
        fit_source="",
        predictor=None,
        extra={"key": key, "probe_seconds": round(cal.probe_seconds, 3)},
    )
    doc["calibrated_at"] = cal.calibrated_at
    doc["fit"] = cal.fit
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(
            "# Written by the sajax job's probe (batch_runner.probe).\n" + dumps_toml(doc)
        )
        tmp.replace(path)
    except OSError:
        return None
    return path


def probe_points(slots: int) -> list[SweepPoint]:
    """The probe's points, most informative first (full batches of short prompts: a, b and d;
    single long prompts: b apart from d; one long prompt decoding beside short ones: c as a job
    sees it); the probe runs as many as its budget allows.

    The mixed batch is there because llama.cpp's attention pads every sequence of a batch to the
    longest one's KV length: four sequences at 1,200 + 3 x 16 tokens of context decode in 58 ms
    on one core where four at 4 x 300 take 45 ms (the same sum). A job's batches are mixed, so
    ``c`` fitted on equal prompts alone comes out near 0 and the job runs ~20 % slower than
    predicted (measured, 200-row make-run file)."""
    s = max(1, int(slots))
    points = [
        SweepPoint(s, 16, 8),
        SweepPoint(1, 192, 2),
        SweepPoint(s, 16, 24, long_first=480) if s > 1 else SweepPoint(1, 480, 24),
        SweepPoint(s, 96, 6),
        SweepPoint(1, 16, 12),
        SweepPoint(min(2, s), 320, 2),
        SweepPoint(s, 32, 16),
        SweepPoint(1, 64, 8),
        SweepPoint(s, 160, 4),
    ]
    return points


def run_probe(engine, base: EngineModel, budget_s: float, seed: int = 0) -> Calibration:
    """Probe a started ``engine`` for about ``budget_s`` seconds; fit (a, b, c, d)."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    slots = int(base.slots)
    log = getattr(engine, "iteration_log", None)
    for k, point in enumerate(WARMUP):
        _run_point(engine, point._replace(batch=min(point.batch, slots)), f"probe-warm-{k}", rng)
    first_record = len(log) if log is not None else 0
    xs, ys, points, longest = [], [], 0, 0.0
    for k, point in enumerate(probe_points(slots)):
        # stop before a point that would likely end past the budget (after the first three)
        if points >= 3 and time.perf_counter() - started + longest > budget_s:
            break
        t0, t_point = engine.now(), time.perf_counter()
        times = _run_point(engine, point, f"probe-{k}", rng)
        longest = max(longest, time.perf_counter() - t_point)
        points += 1
        if log is None:
            ids = [f"probe-{k}-{j}" for j in range(point.batch)]
            inp = np.array([times[i][2] for i in ids])
            out = np.array([times[i][3] for i in ids])
            bf, bl = schedule_basis(
                np.arange(point.batch), inp, out, slots=slots, token_budget=int(base.token_budget)
            )
            xs += [bf, bl]
            ys += [
                np.array([1000 * (times[i][0] - t0) for i in ids]),
                np.array([1000 * (times[i][1] - t0) for i in ids]),
            ]
    if log is not None:
        fit: IterationFit = fit_from_iteration_log(log[first_record:])
    else:
        fit = _fit(np.concatenate(xs), np.concatenate(ys), relative=True)
    model = base._replace(
        a_ms=np.float32(fit.a_ms),
        b_ms=np.float32(fit.b_ms),
        c_ms=np.float32(fit.c_ms),
        d_ms=np.float32(fit.d_ms),
    )
    token_budget = getattr(engine, "token_budget", None)
    if token_budget:
        model = model._replace(token_budget=np.int32(token_budget))
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    fit_doc = {k: (float(v) if isinstance(v, float) else int(v)) for k, v in fit._asdict().items()}
    return Calibration(model, "probe", None, fit_doc, when, time.perf_counter() - started, points)


def calibrate_for_job(
    engine,
    mode: str,
    base: EngineModel,
    *,
    predicted_job_s,
    max_seconds: float = MAX_PROBE_S,
    share: float = PROBE_SHARE,
    seed: int = 0,
) -> Calibration:
    """The engine model a job plans with (module doc); ``engine`` is started.
    ``predicted_job_s``: seconds, or a function giving them (called only when a probe is due,
    so that a cached fit costs no prediction)."""
    if mode not in MODES:
        raise ConfigError(f"--calibrate must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "never":
        return Calibration(base, "shipped (--calibrate never)", None, {}, "", 0.0, 0)
    key = probe_key(engine, int(base.slots))
    if mode == "auto":
        cached = load_cached(key)
        if cached is not None:
            return cached
    if callable(predicted_job_s):
        predicted_job_s = predicted_job_s()
    budget = min(float(max_seconds), float(share) * max(0.0, float(predicted_job_s)))
    if mode == "auto" and budget < MIN_PROBE_S:
        why = f"job predicted {predicted_job_s:.0f} s: too short to probe"
        return Calibration(base, f"shipped ({why})", None, {}, "", 0.0, 0)
    cal = run_probe(engine, base, max(budget, MIN_PROBE_S), seed=seed)
    path = save(key, cal)
    return cal._replace(path=path)
