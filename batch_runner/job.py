"""One batch job: read -> plan -> execute -> write, crash-safe and resumable.

    summary = run_job(JobConfig(input="requests.parquet", out="results.parquet", engine="sim"))

Steps:
  1. read and validate the request file (``batch_runner.requests.read_requests``, SLO presets
     from ``slo_config`` at ``slo_scale``);
  2. open the checkpoint ``OUT.parts`` (``--resume``: skip ids already done; the input file
     must be the one the checkpoint was made from);
  3. plan the rows not yet done (``make_plan``: order + in-flight cap + predicted e2e, and the
     planner's predicted attainment of that plan and of FCFS for the summary). Output lengths
     for planning: ``max_new_tokens`` under ignore_eos, else ``output_tokens_hint``, else the
     task's median from ``--length-predictor`` (or the ``--profile`` file's
     ``[output_lengths.<task>]`` tables, as ``sajax calibrate --history`` writes them), capped
     at ``max_new_tokens``, else ``max_new_tokens``;
  4. execute the plan on the engine, checkpointing finished rows every K rows / T seconds;
  5. write ``OUT`` (every input row once, input order), the summary (``--summary-json``) and the
     report (``--report``), then delete ``OUT.parts``.

Exit codes (click exceptions): 2 a user error (bad input, checkpoint of another file, a write
failed: ``batch_runner.errors``), 3 the engine died, 130 SIGINT, 143 SIGTERM. After a failed
write, 3, 130 and 143 the finished rows are checkpointed, and the same command with
``--resume`` continues the job (the message prints it).

Times of a resumed job: each run measures its rows from its own start (the engine's clock when
that run's execution began), as if the rows left were a new offline batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import click
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_runner import checkpoint as ckpt_mod
from batch_runner import results as results_mod
from batch_runner.engines.base import Engine, EngineError, EngineRequest, SamplingParams
from batch_runner.errors import OutputError, UserError
from batch_runner.executor import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_STALL_TIMEOUT_S,
    Measurement,
    execute,
)
from batch_runner.parquet_io import rejects_path, write_parquet_atomic
from batch_runner.progress import JobProgress
from batch_runner.requests import RequestFile
from sajax.engine_model import EngineModel

log = logging.getLogger(__name__)


@dataclass
class JobConfig:
    """The options of ``sajax-batch`` (one field per CLI option), plus runner tuning."""

    input: Path
    out: Path
    engine: str = "auto"  # auto | llamacpp | turbomind | sim
    policy: str = "sajax"  # sajax | fcfs | sjf | edf | slack
    objective: str = "g"  # g | attainment | tardiness
    time_budget: float = 10.0  # seconds the planner may spend
    seed: int = 0
    slo_config: Path | None = None
    slo_scale: str | None = None  # which scale table of the SLO preset file
    profile: str | None = None
    length_predictor: Path | None = None  # TOML with [output_lengths.<task>]; None: --profile's
    model: Path | None = None
    slots: int | None = None
    resume: bool = False
    on_bad_rows: str = "error"
    summary_json: Path | None = None
    report: Path | None = None
    quiet: bool = False
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S  # s without engine events: dead; 0 = never
    # Not CLI options: how often finished rows are checkpointed, and retries per request.
    checkpoint_rows: int = 50
    checkpoint_seconds: float = 10.0
    checkpoint_min_seconds: float = 1.0  # row-triggered parts at most this often
    max_retries: int = DEFAULT_MAX_RETRIES


class JobPlan(NamedTuple):
    order: np.ndarray  # (n,) int64, row indices of the planned table in submission order
    inflight_cap: int  # requests submitted and not finished, at most
    predicted_e2e_ms: np.ndarray  # (n,) float64 per row of the planned table; NaN = unknown
    info: dict = {}  # what the planner reports (JSON-ready), copied to the summary's "plan"


class EngineDied(click.ClickException):
    exit_code = 3


class OutputWriteError(OutputError):
    pass


class JobInterrupted(click.ClickException):
    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM


# -- planning --------------------------------------------------------------------------------


class OutputLengths(NamedTuple):
    tokens: np.ndarray  # (n,) int64 >= 1, the output length the planner assumes per row
    source: np.ndarray  # (n,) str: "ignore_eos" | "hint" | "predicted" | "max_new_tokens"


def _predicted_output_tokens(table: pa.Table, predictor=None) -> OutputLengths:
    """The planner's output length per row, in order of preference:

    - ``max_new_tokens`` under ``ignore_eos`` (the engine runs to the cap);
    - ``output_tokens_hint``, capped at ``max_new_tokens`` (as the sim engine generates);
    - with an ``OutputLengthPredictor`` (``batch_runner.output_lengths``) that knows the row's
      task: its median output length, capped at ``max_new_tokens``;
    - else ``max_new_tokens`` (an upper bound).

    At least 1 token.
    """
    n = table.num_rows
    cap = _int_column(table, "max_new_tokens", 256)
    hint = _int_column(table, "output_tokens_hint", -1)  # null -> -1: no hint
    ignore = (
        table.column("ignore_eos").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        if "ignore_eos" in table.column_names
        else np.zeros(n, dtype=bool)
    )
    has_hint = (hint >= 0) & ~ignore
    predicted = np.full(n, -1, dtype=np.int64)
    if predictor is not None:
        tasks = (
            table.column("task").fill_null("default").to_pylist()
            if "task" in table.column_names
            else ["default"] * n
        )
        by_task = {t: predictor.predict(str(t), default=-1) for t in set(tasks)}
        predicted = np.asarray([by_task[t] for t in tasks], dtype=np.int64)
    use_prediction = ~ignore & ~has_hint & (predicted >= 1)
    out = np.where(has_hint, np.minimum(hint, cap), cap)
    out = np.where(use_prediction, np.minimum(predicted, cap), out)
    source = np.where(
        ignore,
        "ignore_eos",
        np.where(has_hint, "hint", np.where(use_prediction, "predicted", "max_new_tokens")),
    )
    return OutputLengths(np.maximum(out, 1), source)


def _length_predictor(config: JobConfig):
    """The output-length predictor of ``--length-predictor``, else the ``[output_lengths]``
    tables of the ``--profile`` file when it has them (a ``sajax calibrate --history`` profile),
    else None."""
    from batch_runner.output_lengths import load_output_length_predictor

    if config.length_predictor is not None:
        return load_output_length_predictor(config.length_predictor)  # ConfigError: exit 2
    if not config.profile:
        return None
    from sajax.profiles import read_profile

    try:
        data = read_profile(config.profile)
    except ValueError:
        return None  # a bad --profile is reported where the engine model is loaded
    if not data.get("output_lengths"):
        return None
    from sajax.profiles import profile_path

    return load_output_length_predictor(profile_path(config.profile))


def _int_column(table: pa.Table, name: str, default: int) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, default, dtype=np.int64)
    col = pc.cast(table.column(name), pa.int64()).fill_null(default)
    return col.to_numpy(zero_copy_only=False).astype(np.int64)


def _engine_model(engine: Engine, config: JobConfig) -> EngineModel:
    """The EngineModel plans are made with: the engine's own (the sim engine has one), else
    ``--profile``, else the engine's ``default_profile`` (else ``default``); ``--slots`` wins."""
    from sajax.profiles import load_profile

    model = getattr(engine, "model", None)
    if not isinstance(model, EngineModel):
        name = config.profile or getattr(engine, "default_profile", None) or "default"
        try:
            model = load_profile(name)
        except ValueError as exc:
            raise UserError(f"--profile: {exc}") from exc
    if config.slots:
        model = model._replace(slots=np.int32(config.slots))
    return model


POLICY_HEURISTICS = {"sjf": "sjf", "edf": "edf", "slack": "least_slack"}
OBJECTIVES = {"g": "goodput", "attainment": "attainment", "tardiness": "tardiness"}


def make_plan(table: pa.Table, engine: Engine, config: JobConfig) -> JobPlan:
    """Order the rows of ``table`` and choose the in-flight cap (the one place plans are made).

    ``sajax``: the annealing planner (``sajax.planner.plan``: order, cap <= slots, predicted
    timings). ``fcfs``: input order; ``sjf``/``edf``/``slack``: ``sajax.heuristics``; these run
    with the engine's full slots, and their predicted timings come from the reference
    simulator. When a module is not there, the job falls back to FCFS and says so on the log.
    """
    n = table.num_rows
    model = _engine_model(engine, config)
    cap = int(model.slots)
    policy = (config.policy or "fcfs").lower()
    order = np.arange(n, dtype=np.int64)
    if n == 0:
        return JobPlan(order, cap, np.full(n, np.nan))
    lengths = _predicted_output_tokens(table, _length_predictor(config))
    problem = _problem_from_table(table, engine, lengths.tokens)
    length_info = {
        "output_lengths": {
            str(k): int(v)
            for k, v in zip(*np.unique(lengths.source, return_counts=True), strict=True)
        }
    }
    if policy == "sajax":
        try:
            import jax

            from sajax.planner import PlanConfig, plan
        except ImportError as exc:
            log.warning("policy 'sajax': the planner is not available (%s); using FCFS", exc)
            policy = "fcfs (sajax unavailable)"
        else:
            cfg = PlanConfig(
                objective=OBJECTIVES.get(config.objective, config.objective),
                time_budget_s=config.time_budget,
            )
            result = plan(problem, model, cfg, key=jax.random.key(config.seed))
            return JobPlan(
                np.asarray(result.order, np.int64),
                int(result.inflight_cap),
                np.asarray(result.e2e_ms, np.float64)[:n],
                {"policy": "sajax", **result.summary.as_dict(), **length_info},
            )
    elif policy != "fcfs":
        name = POLICY_HEURISTICS.get(policy, policy)
        try:
            from sajax import heuristics

            order_fn = getattr(heuristics, name)
        except (ImportError, AttributeError) as exc:
            log.warning("policy %r is not available (%s); using FCFS order", policy, exc)
            policy = f"fcfs ({policy} unavailable)"
        else:
            try:
                raw = order_fn(problem, model)
            except TypeError:
                raw = order_fn(problem)
            order = np.asarray(raw, dtype=np.int64)
            order = order[order < n]  # drop padding rows, if the problem was padded
    predicted = _predicted_metrics(order, problem, model)
    fcfs = (
        predicted
        if np.array_equal(order, np.arange(n))
        else _predicted_metrics(np.arange(n), problem, model)
    )
    info = {
        "policy": policy,
        "attainment": predicted["attainment"],
        "goodput": predicted["goodput"],
        "mean_e2e_ms": predicted["mean_e2e_ms"],
        "p99_e2e_ms": predicted["p99_e2e_ms"],
        "fcfs_attainment": fcfs["attainment"],
        "fcfs_goodput": fcfs["goodput"],
        "fcfs_mean_e2e_ms": fcfs["mean_e2e_ms"],
        **length_info,
    }
    return JobPlan(order, cap, predicted["e2e_ms"], info)


def _predicted_metrics(order: np.ndarray, problem, model: EngineModel) -> dict[str, Any]:
    """Predicted timings and SLO metrics when ``order`` runs on ``model`` with the engine's
    full slots: per-row e2e (ms, NaN for rows not in ``order``), attainment, G, mean and p99
    e2e — the same definitions (``sajax.metrics``) as the measured ones.

    From the reference simulator (exact for the model, NumPy, no compilation; about 0.2 ms
    per row on one core).
    """
    from sajax.metrics import attainment, goodput, problem_metrics
    from sajax.refsim import reference_simulate

    ref = reference_simulate(order, problem.input_len, problem.output_len, model)
    m = problem_metrics(ref.first_token_ms, ref.finish_ms, problem)
    e2e = np.asarray(ref.finish_ms, np.float64)
    live = np.isfinite(e2e)
    return {
        "e2e_ms": e2e,
        "attainment": float(attainment(m.met[live], m.has_slo[live], problem.weight[live])),
        "goodput": float(goodput(m.met[live], m.has_slo[live], e2e[live], problem.weight[live])),
        "mean_e2e_ms": float(np.mean(e2e[live])) if live.any() else float("nan"),
        "p99_e2e_ms": float(np.percentile(e2e[live], 99)) if live.any() else float("nan"),
    }


def _problem_from_table(table: pa.Table, engine: Engine, output_len: np.ndarray | None = None):
    """The planner's ``Problem``: the engine's token counts, ``output_len`` (default: from
    ``_predicted_output_tokens`` without a predictor), SLOs (missing = inf) and weights."""
    from sajax.problem import Problem

    if output_len is None:
        output_len = _predicted_output_tokens(table).tokens

    requests = _engine_requests(table, SamplingParams())
    input_len = np.asarray([engine.count_tokens(r) for r in requests], dtype=np.int32)
    slo = {c: results_mod._floats(table, c, default=np.inf) for c in results_mod.SLO_COLUMNS}
    return Problem(
        input_len=input_len,
        output_len=np.asarray(output_len).astype(np.int32),
        slo_e2e_ms=slo["slo_e2e_ms"].astype(np.float32),
        slo_ttft_ms=slo["slo_ttft_ms"].astype(np.float32),
        slo_tpot_ms=slo["slo_tpot_ms"].astype(np.float32),
        weight=results_mod._floats(table, "weight", default=1.0).astype(np.float32),
        mask=np.ones(table.num_rows, dtype=bool),
    )


# -- the pieces of a run ---------------------------------------------------------------------


def _engine_requests(table: pa.Table, sampling: SamplingParams) -> list[EngineRequest]:
    cols = [
        c
        for c in ("id", "prompt", "messages", "max_new_tokens", "ignore_eos", "output_tokens_hint")
        if c in table.column_names
    ]
    out = []
    for row in table.select(cols).to_pylist():
        messages = row.get("messages")
        out.append(
            EngineRequest(
                id=str(row["id"]),
                prompt=row.get("prompt"),
                messages=tuple(dict(m) for m in messages) if messages is not None else None,
                max_new_tokens=int(row.get("max_new_tokens") or 256),
                ignore_eos=bool(row.get("ignore_eos") or False),
                sampling=sampling,
                output_tokens_hint=row.get("output_tokens_hint"),
            )
        )
    return out


AUTO_ENGINES = ("turbomind", "llamacpp")  # "auto": the first whose runtime is present


def make_engine(config: JobConfig) -> Engine:
    """``batch_runner.engines.<name>.from_config(config)``; ``auto`` tries AUTO_ENGINES."""
    import importlib

    name = config.engine
    if name == "auto":
        name = _auto_engine()
        log.info("--engine auto: using %s", name)
    try:
        module = importlib.import_module(f"batch_runner.engines.{name}")
    except ImportError as exc:
        raise UserError(f"unknown or unavailable engine {name!r}: {exc}") from exc
    factory = getattr(module, "from_config", None)
    if factory is None:
        raise UserError(f"engine module {module.__name__} has no from_config(config)")
    try:
        return factory(config)
    except EngineError as exc:
        raise EngineDied(f"engine {name!r} failed to load: {exc}") from exc


def _auto_engine() -> str:
    """The first of AUTO_ENGINES whose module imports and reports no runtime problems."""
    import importlib

    for name in AUTO_ENGINES:
        try:
            module = importlib.import_module(f"batch_runner.engines.{name}")
            check = getattr(module, "runtime_problems", None)
            if check is None or not check():
                return name
        except Exception as exc:  # an engine that cannot even be checked is not available
            log.debug("engine %s unavailable: %s", name, exc)
    return AUTO_ENGINES[-1]


def _read(config: JobConfig) -> pa.Table:
    from batch_runner.requests import read_requests

    presets = None
    if config.slo_config is not None:
        from batch_runner.presets import load_presets

        presets = load_presets(config.slo_config, scale=config.slo_scale)
    request_file = read_requests(config.input, slo_config=presets, on_bad_rows=config.on_bad_rows)
    rejects = request_file.rejects
    if rejects is not None and rejects.num_rows:
        path = rejects_path(config.out)
        write_parquet_atomic(rejects, path)
        log.warning("%d bad rows skipped; written with the reason to %s", rejects.num_rows, path)
    return request_file.table


def resume_command(config: JobConfig) -> str:
    """The command that continues this job: the user's own command line plus ``--resume``."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "sajax" and argv[1:2] == ["run"]:
        argv = ["sajax-batch", *argv[2:]]
    if argv and Path(argv[0]).name == "sajax-batch":
        args = argv[1:]
        if "--resume" not in args:
            args.append("--resume")
        return shlex.join(["sajax-batch", *args])
    args = ["sajax-batch", str(config.input)]
    for f in fields(JobConfig):
        if f.name == "input" or f.name.startswith("checkpoint_") or f.name == "max_retries":
            continue
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            if value or f.name == "resume":
                args.append(flag)
        elif value is not None:
            args += [flag, str(value)]
    return shlex.join(args)


@contextmanager
def _stop_on_signals() -> Iterator[dict[str, int]]:
    """SIGINT/SIGTERM set ``state['signum']`` (a second one stops at once)."""
    state: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if "signum" in state:
            raise KeyboardInterrupt
        state["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _echo(config: JobConfig, message: str) -> None:
    if not config.quiet:
        click.echo(message, err=True)


# -- the job ---------------------------------------------------------------------------------


def run_job(
    config: JobConfig, *, engine: Engine | None = None, requests: RequestFile | None = None
) -> dict[str, Any]:
    """Run the whole job; return the summary.

    ``engine`` overrides ``config.engine`` (tests); ``requests`` is the already-read request
    file (the CLI reads and reports it first), else it is read here and rejects are written.
    """
    wall0 = time.monotonic()
    out = Path(config.out)
    table = requests.table if requests is not None else _read(config)
    ids = [str(x) for x in table.column("id").to_pylist()]

    fingerprint = ckpt_mod.Fingerprint.of(config.input)
    parts = ckpt_mod.parts_dir_for(out)
    kwargs = {
        "every_rows": config.checkpoint_rows,
        "every_seconds": config.checkpoint_seconds,
        "min_seconds": config.checkpoint_min_seconds,
    }
    if config.resume and (parts / ckpt_mod.MANIFEST).exists():
        ckpt = ckpt_mod.Checkpoint.open(parts, fingerprint, **kwargs)
    else:
        if config.resume:
            _echo(config, f"nothing to resume in {parts}; starting the job from the beginning")
        ckpt = ckpt_mod.Checkpoint.create(parts, fingerprint, **kwargs)
    done = ckpt.load()
    done_ids = set(done.column("id").to_pylist())
    unknown = done_ids - set(ids)
    if unknown:
        raise ckpt_mod.CheckpointError(
            f"{parts} has results for ids that are not in {config.input} "
            f"(e.g. {sorted(unknown)[:3]}); delete {parts} to start over."
        )
    todo_mask = pa.array([rid not in done_ids for rid in ids], type=pa.bool_())
    todo = table.filter(todo_mask)
    if done_ids:
        _echo(config, f"resuming: {len(done_ids)} of {len(ids)} rows already done")

    engine_name = done.column("engine")[0].as_py() if done.num_rows else config.engine
    profile = config.profile
    plan_info: dict[str, Any] = {}
    plan_time_s = 0.0
    stopped_by: int | None = None
    if todo.num_rows:  # a resume with everything done only writes the output: no engine
        if engine is None:
            try:
                engine = make_engine(config)
            except BaseException:
                if not done.num_rows:  # leave no empty checkpoint behind
                    ckpt.remove()
                raise
        engine_name = engine.name
        profile = profile or getattr(engine, "profile", None)
        try:
            engine.start()
        except EngineError as exc:
            raise EngineDied(f"the {engine.name} engine failed to start: {exc}") from exc
        try:
            t_plan = time.monotonic()
            plan = make_plan(todo, engine, config)
            plan_time_s = time.monotonic() - t_plan
            plan_info = {"inflight_cap": plan.inflight_cap, **plan.info}
            stopped_by = _execute(config, engine, table.filter(todo_mask), plan, ckpt, done, table)
        except BaseException:
            # Whatever went wrong (a bug, a second Ctrl-C), keep the rows that finished.
            with contextlib.suppress(Exception):
                ckpt.flush()
            raise
        finally:
            try:
                engine.stop()
            except Exception as exc:  # stopping a broken engine must not hide the real error
                log.warning("engine.stop() failed: %s", exc)
    ckpt.flush()
    if stopped_by is not None:
        saved = ckpt.load().num_rows
        name = signal.Signals(stopped_by).name
        raise JobInterrupted(
            f"interrupted by {name}: {saved} of {len(ids)} rows are done and saved in {parts}.\n"
            f"Resume with:\n  {resume_command(config)}",
            stopped_by,
        )

    results = results_mod.assemble(table, ckpt.load())
    summary = _json_ready(
        results_mod.summarize(
            results,
            engine=engine_name,
            profile=profile,
            policy=config.policy,
            objective=config.objective,
            plan_time_s=plan_time_s,
            plan=plan_info,
            wall_s=time.monotonic() - wall0,
            runs=ckpt.run + 1,
            input=str(config.input),
            output=str(out),
        )
    )
    try:
        write_parquet_atomic(results, out)
        if config.summary_json:
            text = json.dumps(summary, indent=2, allow_nan=False, default=str)
            payload = (text + "\n").encode()
            _write_bytes(Path(config.summary_json), payload)
    except (OSError, OutputError) as exc:
        reason = ckpt_mod._describe_os_error(exc) if isinstance(exc, OSError) else exc.message
        raise OutputWriteError(
            f"could not write {out} or its summary: {reason}. All "
            f"{len(ids)} rows are checkpointed in {parts}; free space and run the same command "
            "with --resume to write the output without running anything again."
        ) from exc
    ckpt.remove()
    if config.report:
        _write_report(out, summary, Path(config.report))
    predicted = ""
    if all(isinstance(plan_info.get(k), float) for k in ("attainment", "fcfs_attainment")):
        predicted = (
            f" (predicted: plan {100 * plan_info['attainment']:.1f}%, "
            f"FCFS {100 * plan_info['fcfs_attainment']:.1f}%)"
        )
    _echo(
        config,
        f"{summary['rows']} rows, {summary['errors']} errors, SLO attainment "
        f"{100 * summary['attainment']:.1f}%{predicted}, G {summary['G']:.3f}/s -> {out}",
    )
    return summary


def _execute(config, engine, todo, plan: JobPlan, ckpt, done: pa.Table, table) -> int | None:
    """Run the plan; checkpoint as rows finish. Returns the signal number if interrupted."""
    requests = _engine_requests(todo, SamplingParams(seed=config.seed))
    if not np.array_equal(np.sort(plan.order), np.arange(len(requests))):
        raise ValueError("the plan must order every row exactly once")
    ordered = [requests[i] for i in plan.order]
    predicted = {r.id: float(plan.predicted_e2e_ms[i]) for i, r in enumerate(requests)}
    row_info = {
        str(row["id"]): row
        for row in todo.select(
            [c for c in ("id", "weight", *results_mod.SLO_COLUMNS) if c in todo.column_names]
        ).to_pylist()
    }
    first_rank = 1 + max(done.column("rank").to_pylist(), default=-1)

    with JobProgress(len(todo) + done.num_rows, initial=done.num_rows, quiet=config.quiet) as bar:
        if done.num_rows:  # a resumed job's attainment so far includes the rows done before
            done_ids = pa.array(done.column("id").to_pylist(), type=pa.string())
            before = results_mod.assemble(table.filter(pc.is_in(table["id"], done_ids)), done)
            bar.seed(
                met=before.column("slo_met").to_pylist(),
                weight=results_mod._floats(before, "weight", default=1.0),
                errors=before.num_rows - before.column("error").null_count,
            )

        def on_result(m: Measurement) -> None:
            ckpt.add(_checkpoint_row(m, ckpt.run, predicted[m.id], engine.name))
            info = row_info[m.id]
            met = (
                False
                if m.error is not None
                else results_mod.row_slo_met(info, m.first_token_ms, m.finish_ms, m.output_tokens)
            )
            bar.update(met=met, weight=float(info.get("weight") or 1.0), error=m.error is not None)

        with _stop_on_signals() as sig:

            def should_stop() -> bool:
                ckpt.maybe_flush()  # the time-based flush, also while no row finishes
                return bool(sig)

            try:
                result = execute(
                    engine,
                    ordered,
                    plan.inflight_cap,
                    max_retries=config.max_retries,
                    on_result=on_result,
                    should_stop=should_stop,
                    first_rank=first_rank,
                    stall_timeout_s=config.stall_timeout or None,
                )
            except EngineError as exc:
                bar.close()
                ckpt.flush()
                saved = ckpt.load().num_rows
                total = done.num_rows + todo.num_rows
                raise EngineDied(
                    f"the {engine.name} engine died: {exc}. {saved} of {total} rows are done "
                    f"and saved in {ckpt.directory}.\nResume with:\n  {resume_command(config)}"
                ) from exc
    if result.stopped:
        return sig.get("signum", signal.SIGINT)
    return None


def _checkpoint_row(m: Measurement, run: int, predicted_e2e_ms: float, engine: str) -> dict:
    return {
        "id": m.id,
        "rank": m.rank,
        "run": run,
        "attempts": m.attempts,
        "submit_ms": m.submit_ms,
        "first_token_ms": m.first_token_ms,
        "finish_ms": m.finish_ms,
        "output_text": m.output_text,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        "finish_reason": m.finish_reason,
        "error": m.error,
        "predicted_e2e_ms": None if np.isnan(predicted_e2e_ms) else predicted_e2e_ms,
        "engine": engine,
    }


def _json_ready(value: Any) -> Any:
    """Strict JSON: NaN/inf become null, NumPy scalars Python numbers, keys strings."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_report(results_path: Path, summary: dict, report_path: Path) -> None:
    try:
        from batch_runner.report import write_report
    except ImportError:
        log.warning("the HTML report module is not available yet; no report written")
        return
    write_report(results_path, summary, report_path)
