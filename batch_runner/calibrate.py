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

The result is a profile TOML in ``sajax/profiles``' format (``[model]`` with the EngineModel
fields, provenance keys), plus ``[fit]`` (errors) and ``[output_lengths.<task>]`` tables::

    sajax calibrate --engine llamacpp --out calibrated.toml
    sajax calibrate --history out/results.parquet --out calibrated.toml
"""

from __future__ import annotations

import datetime
import itertools
import math
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import click
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_runner.errors import ConfigError, InputError, OutputError
from batch_runner.output_lengths import (
    OutputLengthPredictor,
    fit_length_distribution,
    predictor_tables,
)


class IterationFit(NamedTuple):
    a_ms: float  # fixed cost per iteration
    b_ms: float  # cost per forward token
    c_ms: float  # cost per context token
    rows: int  # observations fitted (iterations, or request times)
    rmse_ms: float  # root mean square residual
    mean_abs_rel_error: float  # mean |residual| / observed
    r2: float  # coefficient of determination (over the rows kept)
    outliers: int = 0  # rows dropped by the robust fit (e.g. iterations slowed by other load)


class SweepPoint(NamedTuple):
    batch: int  # requests submitted together
    prompt_tokens: int  # target prompt length (before the chat template)
    output_tokens: int  # max_new_tokens (ignore_eos)


DEFAULT_SWEEP = (
    (1, 2, 4),  # batch sizes
    (16, 128, 384),  # prompt tokens
    (8, 48),  # output tokens
)
QUICK_SWEEP = ((1, 4), (16, 160), (6,))


# -- fitting -----------------------------------------------------------------------------------


def nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin_{beta >= 0} ||x beta - y||^2 for a few columns, exactly: the best of the
    unconstrained least-squares solutions on every subset of columns that is feasible."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    k = x.shape[1]
    best, best_cost = np.zeros(k), float(np.sum(y**2))
    for r in range(1, k + 1):
        for cols in itertools.combinations(range(k), r):
            beta, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if np.any(beta < 0):
                continue
            cost = float(np.sum((x[:, cols] @ beta - y) ** 2))
            if cost < best_cost - 1e-12 * max(1.0, best_cost):
                best = np.zeros(k)
                best[list(cols)] = beta
                best_cost = cost
    return best


def fit_iteration_model(
    decode_tokens,
    prefill_tokens,
    context_tokens,
    seconds,
    *,
    with_context: bool = True,
    robust: bool = True,
) -> IterationFit:
    """Fit ``1000 * seconds ~= a + b * (decode + prefill) + c * context`` (a, b, c >= 0).

    The fit minimises *relative* squared error (rows weighted by 1 / observed time): iteration
    times span 5 ms decodes to 1 s prefills and their noise is roughly proportional, so plain
    least squares would fit the prefills alone. ``robust``: refit without the iterations whose
    relative residual is beyond 4 robust standard deviations (1.4826 * MAD, at least 10%), twice:
    on a shared machine some iterations are stalled by other processes, and least squares
    would spread their delay over a, b and c."""
    forward = np.asarray(decode_tokens, np.float64) + np.asarray(prefill_tokens, np.float64)
    context = np.asarray(context_tokens, np.float64)
    y = 1000.0 * np.asarray(seconds, np.float64)
    basis = [np.ones_like(forward), forward] + ([context] if with_context else [])
    x = np.stack(basis, axis=1)
    w = 1.0 / np.maximum(y, 1e-6)
    keep = np.ones(y.size, bool)
    for _ in range(2 if robust else 0):
        beta = nonnegative_lstsq(x[keep] * w[keep, None], y[keep] * w[keep])
        rel = (x @ beta - y) * w
        center = np.median(rel[keep])
        scale = max(1.4826 * np.median(np.abs(rel[keep] - center)), 0.025)
        keep = np.abs(rel - center) <= 4 * scale
    return _fit(x[keep], y[keep], relative=True)._replace(outliers=int((~keep).sum()))


def fit_from_iteration_log(records: Sequence[Any], **kw) -> IterationFit:
    """``fit_iteration_model`` over ``IterationRecord`` s (idle records are skipped)."""
    rec = [r for r in records if r.decode_tokens + r.prefill_tokens > 0]
    if len(rec) < 3:
        raise ValueError(f"need at least 3 iterations to fit 3 parameters, got {len(rec)}")
    return fit_iteration_model(
        [r.decode_tokens for r in rec],
        [r.prefill_tokens for r in rec],
        [r.context_tokens for r in rec],
        [r.seconds for r in rec],
        **kw,
    )


def schedule_basis(order, input_len, output_len, *, slots: int, token_budget: int):
    """(N, F, C) per request for first token and finish: (n, 3) arrays each, so that
    ``first = basis_first @ (a, b, c)`` and ``finish = basis_finish @ (a, b, c)``."""
    from sajax.refsim import reference_simulate

    first, finish = [], []
    for unit in np.eye(3):
        model = _UnitModel(slots, token_budget, *unit)
        t = reference_simulate(order, input_len, output_len, model)
        first.append(t.first_token_ms)
        finish.append(t.finish_ms)
    return np.stack(first, axis=1), np.stack(finish, axis=1)


def fit_from_request_times(
    order, input_len, output_len, first_ms, finish_ms, *, slots: int, token_budget: int
) -> IterationFit:
    """Fit (a, b, c) to measured per-request first-token and finish times (see module doc)."""
    basis_first, basis_finish = schedule_basis(
        order, input_len, output_len, slots=slots, token_budget=token_budget
    )
    order = np.asarray(order, np.int64)
    x = np.concatenate([basis_first[order], basis_finish[order]])
    y = np.concatenate([np.asarray(first_ms, float)[order], np.asarray(finish_ms, float)[order]])
    ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
    if ok.sum() < 3:
        raise ValueError("need timings of at least 2 requests to fit the engine model")
    return _fit(x[ok], y[ok])


def _fit(x: np.ndarray, y: np.ndarray, relative: bool = False) -> IterationFit:
    w = 1.0 / np.maximum(np.abs(y), 1e-6) if relative else np.ones_like(y)
    beta = nonnegative_lstsq(x * w[:, None], y * w)
    pred = x @ beta
    resid = pred - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    coef = list(beta) + [0.0] * (3 - len(beta))
    return IterationFit(
        a_ms=float(coef[0]),
        b_ms=float(coef[1]),
        c_ms=float(coef[2]),
        rows=int(y.size),
        rmse_ms=float(np.sqrt(np.mean(resid**2))),
        mean_abs_rel_error=float(np.mean(np.abs(resid) / np.maximum(np.abs(y), 1e-9))),
        r2=float(1.0 - np.sum(resid**2) / ss_tot) if ss_tot > 0 else float("nan"),
    )


class _UnitModel(NamedTuple):
    slots: int
    token_budget: int
    a_ms: float
    b_ms: float
    c_ms: float
    kv_capacity: int = 0


# -- the sweep on a real engine ------------------------------------------------------------------


def sweep_points(
    batches: Iterable[int], prompts: Iterable[int], outputs: Iterable[int]
) -> list[SweepPoint]:
    return [SweepPoint(*p) for p in itertools.product(batches, prompts, outputs)]


def run_sweep(
    engine, points: Sequence[SweepPoint], *, seed: int = 0, progress=None, by_point: bool = False
) -> list:
    """Run each point (``batch`` requests at once, ``ignore_eos``) and return every iteration
    record the engine logged (``by_point``: one list per point). ``engine`` is started here and
    stopped at the end."""
    rng = np.random.default_rng(seed)
    records = []
    engine.start()
    try:
        # The first decodes of a new context allocate its compute graphs and page the weights
        # in (seconds, not milliseconds): run them off the record.
        warmup = [SweepPoint(1, 64, 4), SweepPoint(min(2, engine.slots), 16, 4)]
        _run_point(engine, warmup[0], "warmup-0", rng)
        _run_point(engine, warmup[1], "warmup-1", rng)
        for k, point in enumerate(points):
            engine.iteration_log.clear()
            _run_point(engine, point, f"sweep-{k}", rng)
            log = list(engine.iteration_log)
            if by_point:
                records.append(log)
            else:
                records.extend(log)
            if progress is not None:
                progress(k + 1, len(points), point)
    finally:
        engine.stop()
    return records


def fit_sweep_request_times(
    engine, points: Sequence[SweepPoint], *, slots: int, token_budget: int, seed: int = 0
) -> IterationFit:
    """Run each point as its own offline batch on any ``Engine`` and fit (a, b, c) to the
    requests' first-token and finish times (``fit_from_request_times``'s method): for engines
    without an iteration log, e.g. ``sim``, where it must give back the engine's profile."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, point in enumerate(points):
        engine.start()
        try:
            t0 = engine.now()
            times = _run_point(engine, point, f"sweep-{k}", rng)
        finally:
            engine.stop()
        ids = [f"sweep-{k}-{j}" for j in range(point.batch)]
        first = np.array([1000 * (times[i][0] - t0) for i in ids])
        finish = np.array([1000 * (times[i][1] - t0) for i in ids])
        inp = np.array([times[i][2] for i in ids])
        out = np.array([times[i][3] for i in ids])
        order = np.arange(point.batch)
        bf, bl = schedule_basis(order, inp, out, slots=slots, token_budget=token_budget)
        xs += [bf, bl]
        ys += [first, finish]
    return _fit(np.concatenate(xs), np.concatenate(ys), relative=True)


def _run_point(engine, point: SweepPoint, prefix: str, rng) -> dict:
    """Submit ``point.batch`` requests at once and wait until all have finished; returns
    {id: (first-token time, finish time, input tokens, output tokens)} on the engine clock."""
    from batch_runner.engines.base import EngineRequest, Failed, Finished, FirstToken
    from batch_runner.workloads.generate import filler_text

    ids = set()
    for j in range(point.batch):
        rid = f"{prefix}-{j}"
        ids.add(rid)
        engine.submit(
            EngineRequest(
                id=rid,
                prompt=filler_text(point.prompt_tokens, rng),
                max_new_tokens=point.output_tokens,
                ignore_eos=True,
                input_tokens_hint=point.prompt_tokens,  # only the simulator reads it
            )
        )
    deadline = time.monotonic() + 600
    first, times = {}, {}
    while ids:
        for event in engine.poll(timeout=0.5):
            if isinstance(event, Failed):
                raise ConfigError(f"calibration request {event.id} failed: {event.error}")
            if isinstance(event, FirstToken):
                first[event.id] = event.t
            if isinstance(event, Finished):
                ids.discard(event.id)
                start = first.get(event.id, event.t)
                times[event.id] = (start, event.t, event.input_tokens, event.output_tokens)
        if time.monotonic() > deadline:
            raise ConfigError(f"calibration point {point} did not finish in 600 s")
    return times


# -- history --------------------------------------------------------------------------------


def read_history(paths: Sequence[Path]) -> pa.Table:
    """The results files concatenated (columns common to all of them)."""
    tables = []
    for path in paths:
        try:
            t = pq.read_table(path)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{path}: cannot read the results file ({e}).", path=path) from e
        if "output_tokens" not in t.column_names:
            raise InputError(f"{path}: not a results file (no output_tokens column).", path=path)
        tables.append(t.append_column("_file", pa.array([str(path)] * t.num_rows)))
    common = set.intersection(*(set(t.column_names) for t in tables))
    keep = [c for c in tables[0].column_names if c in common]
    return pa.concat_tables([t.select(keep) for t in tables], promote_options="permissive")


def fit_output_lengths(table: pa.Table) -> OutputLengthPredictor:
    """Per-task distributions from finished rows (``error`` null, ``output_tokens`` >= 1)."""
    ok = pc.is_null(table.column("error")) if "error" in table.column_names else None
    t = table.filter(ok) if ok is not None else table
    tasks = t.column("task").fill_null("default").to_pylist() if "task" in t.column_names else None
    tasks = np.asarray(tasks or ["default"] * t.num_rows, dtype=object)
    out = pc.cast(t.column("output_tokens"), pa.float64()).fill_null(np.nan).to_numpy()
    capped = (
        np.asarray(
            pc.equal(t.column("finish_reason"), "length")
            .fill_null(False)
            .to_numpy(zero_copy_only=False),
            bool,
        )
        if "finish_reason" in t.column_names
        else np.zeros(t.num_rows, bool)
    )
    dists = {}
    for task in sorted(set(tasks.tolist()), key=str):
        sel = (tasks == task) & np.isfinite(out) & (out >= 1)
        if sel.any():
            dists[str(task)] = fit_length_distribution(out[sel], capped[sel])
    if not dists:
        raise InputError("the history has no finished rows with output_tokens to learn from.")
    return OutputLengthPredictor(tasks=dists)


def fit_history_timings(table: pa.Table, *, slots: int, token_budget: int) -> IterationFit | None:
    """Refit (a, b, c) from per-request timings, one results file (one job) at a time."""
    need = {"rank", "input_tokens", "output_tokens", "ttft_ms", "e2e_ms", "_file"}
    if not need <= set(table.column_names):
        return None
    xs, ys = [], []
    for path in sorted(set(table.column("_file").to_pylist())):
        t = table.filter(pc.equal(table.column("_file"), path))
        if "engine" in t.column_names and set(t.column("engine").to_pylist()) == {"sim"}:
            continue  # simulated timings say nothing about a real engine
        ok = pc.and_(pc.is_valid(t.column("e2e_ms")), pc.is_valid(t.column("rank")))
        t = t.filter(ok)
        if t.num_rows < 2:
            continue
        rank = t.column("rank").to_numpy()
        order = np.argsort(rank, kind="stable")
        inp = pc.cast(t.column("input_tokens"), pa.int64()).fill_null(1).to_numpy()
        outp = pc.cast(t.column("output_tokens"), pa.int64()).fill_null(1).to_numpy()
        bf, bl = schedule_basis(
            order, inp, np.maximum(outp, 1), slots=slots, token_budget=token_budget
        )
        xs += [bf, bl]
        ys += [t.column("ttft_ms").to_numpy(), t.column("e2e_ms").to_numpy()]
    if not xs:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
    return _fit(x[ok], y[ok]) if ok.sum() >= 3 else None


# -- the profile file ------------------------------------------------------------------------


def profile_document(
    *,
    name: str,
    engine: str,
    llm: str,
    model: Mapping[str, Any] | None,
    fit: IterationFit | None,
    fit_source: str,
    predictor: OutputLengthPredictor | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The TOML document of a calibrated profile (``sajax.profiles`` format)."""
    doc: dict[str, Any] = {
        "name": name,
        "engine": engine,
        "hardware": f"{platform.machine()}, {_cpu_count()} CPU cores, {platform.system()}",
        "llm": llm,
        "calibrated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if extra:
        doc.update(extra)
    if model is not None:
        doc["model"] = dict(model)
    if fit is not None:
        doc["fit"] = {"source": fit_source, **fit._asdict()}
    if predictor is not None:
        doc.update(predictor_tables(predictor))
    return doc


def dumps_toml(doc: Mapping[str, Any]) -> str:
    """TOML for a document of scalars, lists of scalars and nested tables (what we write)."""
    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
        if prefix and scalars:
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in table.items():
            if isinstance(v, Mapping):
                emit(v, f"{prefix}.{_key(k)}" if prefix else _key(k))

    emit(doc, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else f'"{k}"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if math.isnan(v):
            return "nan"
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    text = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


# -- the command -----------------------------------------------------------------------------


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
        model_values = {**base, "a_ms": fit.a_ms, "b_ms": fit.b_ms, "c_ms": fit.c_ms}
        say(
            f"engine model: a = {fit.a_ms:.3f} ms, b = {fit.b_ms:.4f} ms/token, c = "
            f"{fit.c_ms:.6f} ms/context token; fit over {fit.rows} observations: RMSE "
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


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1
