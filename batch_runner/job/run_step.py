"""The run step of a job: read the requests (``_read``), open the checkpoint, plan the rows
not yet done (``batch_runner.job.plan_step.make_plan``), execute the plan on the engine
checkpointing finished rows (``_execute``, ``_checkpoint_row``), then write the output, the
summary and the report (``run_job``). See ``batch_runner.job`` for the steps and exit codes.

    summary = run_job(JobConfig(input="requests.parquet", out="results.parquet", engine="sim"))
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_runner import checkpoint as ckpt_mod
from batch_runner import results as results_mod
from batch_runner.engines.base import Engine, EngineError, SamplingParams
from batch_runner.errors import OutputError
from batch_runner.executor import Measurement, execute
from batch_runner.job.config import (
    EngineDied,
    JobConfig,
    JobInterrupted,
    JobPlan,
    OutputWriteError,
)
from batch_runner.job.engines import _engine_requests, make_engine
from batch_runner.job.loop_step import calibrate_step, make_loop
from batch_runner.job.outputs import final_line, write_summary_and_report
from batch_runner.job.plan_step import make_plan
from batch_runner.job.stops import _stop_on_signals, engine_died, resume_command
from batch_runner.parquet_io import rejects_path, write_parquet_atomic
from batch_runner.progress import JobProgress
from batch_runner.requests import RequestFile

log = logging.getLogger(__name__)


def _read(config: JobConfig) -> pa.Table:
    from batch_runner.requests import read_requests

    presets = None
    if config.slo_config is not None:
        from batch_runner.presets import load_presets

        presets = load_presets(config.slo_config, scale=config.slo_scale)
    request_file = read_requests(config.input, slo_config=presets, on_bad_rows=config.on_bad_rows)
    for notice in request_file.notices:  # input columns kept under another name
        log.warning("%s", notice)
    rejects = request_file.rejects
    if rejects is not None and rejects.num_rows:
        path = rejects_path(config.out)
        write_parquet_atomic(rejects, path)
        log.warning("%d bad rows skipped; written with the reason to %s", rejects.num_rows, path)
    return request_file.table


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
    loop_info: dict[str, Any] = {}
    plan_time_s = 0.0
    stopped_by: int | None = None
    if todo.num_rows and config.replicas:
        from batch_runner.replica_job import run_replicated

        step = run_replicated(config, table, todo_mask, ckpt, done)
        engine_name, profile, plan_info = step["engine"], step["profile"], step["plan"]
        plan_time_s, stopped_by = step["plan_time_s"], step["stopped_by"]
    elif todo.num_rows:  # a resume with everything done only writes the output: no engine
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
            t_cal = time.monotonic()
            cal = calibrate_step(engine, config, todo)
            loop_info["calibration"] = {**cal.as_dict(), "seconds": time.monotonic() - t_cal}
            t_plan = time.monotonic()
            plan = make_plan(todo, engine, config, model=cal.model)
            plan_time_s = time.monotonic() - t_plan
            plan_info = {"inflight_cap": plan.inflight_cap, **plan.info}
            loop = make_loop(config, engine, todo, plan, cal.model)
            try:
                stopped_by = _execute(config, engine, todo, plan, ckpt, done, table, loop)
            finally:
                if loop is not None:
                    loop.close(timeout=2 * config.replan_budget + 5)
                    loop_info["closed_loop"] = loop.summary()
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
    try:
        write_parquet_atomic(results, out)
    except (OSError, OutputError) as exc:
        reason = ckpt_mod._describe_os_error(exc) if isinstance(exc, OSError) else exc.message
        raise OutputWriteError(
            f"could not write {out}: {reason}. All {len(ids)} rows are checkpointed in {parts}; "
            "free space and run the same command with --resume to write the output without "
            "running anything again."
        ) from exc
    ckpt.remove()  # the results file holds every row now
    extra = {
        "engine": engine_name,
        "profile": profile,
        "policy": config.policy,
        "objective": config.objective,
        "plan_time_s": plan_time_s,
        "plan": plan_info,
        "wall_s": time.monotonic() - wall0,
        "runs": ckpt.run + 1,
        "input": str(config.input),
        "output": str(out),
        **loop_info,  # calibration, closed_loop
    }
    if "replica" in results.column_names:  # a --replicas job: rows, attainment... per replica
        from batch_runner.replica_job import replica_summary

        extra["replicas"] = replica_summary(results, plan_info)
    summary = write_summary_and_report(results, out, config, extra)  # exit 4 if it fails
    _echo(config, final_line(summary, plan_info, out))
    return summary


def _execute(
    config, engine, todo, plan: JobPlan, ckpt, done: pa.Table, table, controller=None
) -> int | None:
    """Run the plan (with the closed loop ``controller``, if any); checkpoint as rows finish.
    Returns the signal number if interrupted."""
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
            count_finished(bar, row_info[m.id], m)

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
                    controller=controller,
                )
            except EngineError as exc:
                bar.close()
                total = done.num_rows + todo.num_rows
                raise engine_died(f"the {engine.name} engine", exc, config, ckpt, total) from exc
    if result.stopped:
        return sig.get("signum", signal.SIGINT)
    return None


def count_finished(bar: JobProgress, info: dict, m: Measurement) -> None:
    """Count finished row ``m`` (its request row ``info``) on the progress ``bar``."""
    met = (  # None: the row has no SLO
        False
        if m.error is not None
        else results_mod.row_slo_met(info, m.first_token_ms, m.finish_ms, m.output_tokens)
    )
    bar.update(met=met, weight=float(info.get("weight") or 1.0), error=m.error is not None)


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
