"""``sajax calibrate``: fit the engine model and the output-length predictor to measurements.

**From an engine sweep** (``--engine llamacpp``): run short batches on the real engine (batch
sizes x prompt lengths x output lengths, ``ignore_eos``) and fit, by non-negative least squares
over every logged iteration (``engine.iteration_log``)::

    1000 * seconds_k  ~=  a_ms + b_ms * (decode_k + prefill_k) + c_ms * context_k

**From earlier results** (``--history results/*.parquet``): per task, the output-length
distribution (``batch_runner.output_lengths``); and, when the rows carry timings, the engine
model again. For an offline job (every request at t0, admitted in rank order as slots free up)
the schedule of a continuous-batching engine does not depend on its speed, so each request's
first-token and finish times are *linear* in (a, b, c)::

    finish_i = a * N_i + b * F_i + c * C_i

with N_i, F_i, C_i the iterations, forward tokens and context tokens summed up to the
iteration that finishes i. Running ``sajax.refsim`` once per unit cost ((1,0,0), (0,1,0),
(0,0,1)) gives those three columns exactly; the fit is least squares over every row's TTFT and
e2e. (The runs are assumed to have had ``slots`` in flight, the engine's full slots.)

The modules: ``calibrate_fit`` (the fits), ``calibrate_sweep`` (the sweep),
``calibrate_history`` (results files), ``profile_file`` (the TOML). The result is a profile TOML
in ``sajax/profiles``' format (``[model]`` with the EngineModel fields, provenance keys), plus
``[fit]`` (errors) and ``[output_lengths.<task>]`` tables::

    sajax calibrate --engine llamacpp --out calibrated.toml
    sajax calibrate --history out/results.parquet --out calibrated.toml
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from batch_runner.calibrate_fit import (
    IterationFit,
    _fit,
    _UnitModel,
    fit_from_iteration_log,
    fit_from_request_times,
    fit_iteration_model,
    nonnegative_lstsq,
    schedule_basis,
)
from batch_runner.calibrate_history import fit_history_timings, fit_output_lengths, read_history
from batch_runner.calibrate_sweep import (
    DEFAULT_SWEEP,
    QUICK_SWEEP,
    SweepPoint,
    fit_sweep_request_times,
    run_sweep,
    sweep_points,
)
from batch_runner.errors import OutputError
from batch_runner.profile_file import _key, _value, dumps_toml, profile_document


def calibrate_command(
    engine: str | None = None,
    model: Path | None = None,
    history: Sequence[Path] = (),
    out: Path | None = None,
    slots: int | None = None,
    seed: int = 0,
    quiet: bool = False,
    sweep: Sequence[Sequence[int]] | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Fit from a sweep on ``engine`` (llamacpp) and/or from ``history``; write ``out``."""
    from sajax.engine_model import engine_model_to_dict
    from sajax.profiles import load_profile

    def say(text: str) -> None:
        if not quiet:
            click.echo(text)

    if out is None:
        raise click.UsageError("--out is required")
    history = list(history or ())
    engine = None if engine in (None, "auto") else engine
    ctx = click.get_current_context(silent=True)
    if history and ctx is not None and _is_default(ctx, "engine"):
        engine = None  # `--history` alone: fit from the files, run nothing
    if engine is None and not history:
        raise click.UsageError("give --engine llamacpp (a sweep) and/or --history RESULTS...")
    base = engine_model_to_dict(load_profile("default"))
    if slots:
        base["slots"] = int(slots)
    model_values, fit, fit_source, llm, extra = None, None, "", "", {}
    predictor = None

    if engine == "sim":
        from batch_runner.engines.sim import SimEngine
        from sajax.engine_model import engine_model_from_mapping

        points = [p for p in sweep_points(*(sweep or DEFAULT_SWEEP)) if p.batch <= base["slots"]]
        sim = SimEngine(engine_model_from_mapping(base), profile="default")
        fit = fit_sweep_request_times(
            sim, points, slots=base["slots"], token_budget=base["token_budget"], seed=seed
        )
        fit_source = f"request times of {len(points)} sweep points on the simulator"
        llm, engine_done = "sim (default profile)", True
        say(
            f"simulator check: true a = {base['a_ms']:g}, b = {base['b_ms']:g}, "
            f"c = {base['c_ms']:g} (default profile)"
        )
    else:
        engine_done = False

    if engine is not None and not engine_done:
        if engine != "llamacpp":
            raise click.UsageError(
                f"--engine {engine}: sweeps run on llamacpp (or sim); turbomind needs a GPU: "
                "use --history with a turbomind results file instead"
            )
        from batch_runner.engines.llamacpp import LlamaCppEngine

        eng = LlamaCppEngine(model, slots=base["slots"], seed=seed)
        base["token_budget"] = eng.token_budget
        points = sweep_points(*(sweep or DEFAULT_SWEEP))
        points = [p for p in points if p.batch <= base["slots"]]
        say(f"calibrating {eng.model_path.name}: {len(points)} sweep points, {base['slots']} slots")
        t0 = time.monotonic()
        records = run_sweep(
            eng,
            points,
            seed=seed,
            progress=None if quiet else lambda k, n, p: say(f"  [{k}/{n}] {p}"),
        )
        fit = fit_from_iteration_log(records)
        fit_source = f"sweep of {len(points)} points, {len(records)} iterations"
        llm = eng.model_path.name
        extra["sweep_seconds"] = round(time.monotonic() - t0, 1)

    if history:
        table = read_history(history)
        predictor = fit_output_lengths(table)
        for task, d in predictor.tasks.items():
            say(
                f"output lengths {task}: {d.rows} rows, mean {d.mean:.1f}, p50 "
                f"{d.quantiles['p50']:.0f}, p90 {d.quantiles['p90']:.0f}, lognormal mu "
                f"{d.lognormal_mu:.3f} sigma {d.lognormal_sigma:.3f}, "
                f"capped {100 * d.capped_share:.0f}%"
            )
        if fit is None:
            fit = fit_history_timings(table, slots=base["slots"], token_budget=base["token_budget"])
            if fit is not None:
                fit_source = f"per-request timings of {len(history)} results file(s)"
                engines = (
                    sorted(set(table.column("engine").to_pylist()))
                    if "engine" in table.column_names
                    else []
                )
                llm = llm or ",".join(map(str, engines))
            else:
                say("history has no real-engine timings: the engine model is not refitted")
        extra["history"] = [str(p) for p in history]

    if fit is not None:
        costs = {"a_ms": fit.a_ms, "b_ms": fit.b_ms, "c_ms": fit.c_ms, "d_ms": fit.d_ms}
        model_values = {**base, **costs}
        say(
            f"engine model: a = {fit.a_ms:.3f} ms, b = {fit.b_ms:.4f} ms/token, c = "
            f"{fit.c_ms:.6f} ms/context token, d = {fit.d_ms:.3f} ms/sampled row; fit over "
            f"{fit.rows} observations: RMSE "
            f"{fit.rmse_ms:.2f} ms, mean |rel. error| {100 * fit.mean_abs_rel_error:.1f}%, "
            f"R^2 {fit.r2:.3f} ({fit.outliers} outliers left out)"
        )
    doc = profile_document(
        name=Path(out).stem,
        engine=engine or "history",
        llm=llm,
        model=model_values,
        fit=fit,
        fit_source=fit_source,
        predictor=predictor,
        extra=extra,
    )
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(_HEADER + dumps_toml(doc), encoding="utf-8")
    except OSError as e:
        raise OutputError(f"cannot write {out} ({e}).", path=out) from e
    say(f"wrote {out}")
    return doc


_HEADER = "# Written by `sajax calibrate`; load with sajax.profiles.load_profile(path).\n"


def _is_default(ctx: click.Context, name: str) -> bool:
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None)


__all__ = [
    "DEFAULT_SWEEP",
    "QUICK_SWEEP",
    "IterationFit",
    "SweepPoint",
    "_UnitModel",
    "_fit",
    "_key",
    "_value",
    "calibrate_command",
    "dumps_toml",
    "fit_from_iteration_log",
    "fit_from_request_times",
    "fit_history_timings",
    "fit_iteration_model",
    "fit_output_lengths",
    "fit_sweep_request_times",
    "nonnegative_lstsq",
    "profile_document",
    "read_history",
    "run_sweep",
    "schedule_basis",
    "sweep_points",
]
