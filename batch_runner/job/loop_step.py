"""The closed loop's two steps in a job: calibrate before planning, then watch and re-plan.

``calibrate_step`` (before ``make_plan``): which engine model the plan is made with, and how it
was obtained (the summary's ``calibration``):

- ``--profile`` given: that profile (``--calibrate always`` probes anyway);
- the sim engine: its own profile (it is the truth there; ``always`` probes it anyway);
- a real engine, ``--calibrate auto`` (default): a cached probe fit of this machine, engine,
  model and slots while valid, else a probe of at most ~20 s / 5 % of the job's predicted time
  (``batch_runner.probe``); ``never``: the shipped profile.

``make_loop`` (for ``execute``): the ``ClosedLoop`` of a ``sajax`` plan (``--replan auto``, the
default; ``off`` or another policy: None), with the per-task length model of the rows.

    cal = calibrate_step(engine, config, todo)
    plan = make_plan(todo, engine, config, model=cal.model)
    loop = make_loop(config, engine, todo, plan, cal.model)
"""

from __future__ import annotations

import logging

import click
import numpy as np
import pyarrow as pa

from batch_runner.closed_loop import ClosedLoop, LoopConfig
from batch_runner.engines.base import Engine
from batch_runner.errors import ConfigError
from batch_runner.job.config import JobConfig, JobPlan
from batch_runner.job.plan_step import (
    OBJECTIVES,
    _engine_model,
    _int_column,
    _length_predictor,
    _predicted_output_tokens,
    _problem_from_table,
)
from batch_runner.online_fit import OnlineLengths
from batch_runner.probe import Calibration, calibrate_for_job

log = logging.getLogger(__name__)
REPLAN_MODES = ("auto", "on", "off")


def calibrate_step(engine: Engine, config: JobConfig, table: pa.Table) -> Calibration:
    """The engine model to plan ``table`` with (module doc)."""
    from sajax.refsim import reference_simulate

    mode = (config.calibrate or "auto").lower()
    base = _engine_model(engine, config)
    simulated = bool(getattr(engine, "virtual_clock", False)) or engine.name == "sim"
    if mode != "always":
        if config.profile:
            return Calibration(base, f"--profile {config.profile}", None, {}, "", 0.0, 0)
        if simulated:
            return Calibration(base, "the sim engine's own profile", None, {}, "", 0.0, 0)

    def predicted_s() -> float:  # the job's time with the shipped profile (only to probe)
        lengths = _predicted_output_tokens(table, _length_predictor(config))
        problem = _problem_from_table(table, engine, lengths.tokens)
        order = np.arange(table.num_rows)
        ref = reference_simulate(order, problem.input_len, problem.output_len, base)
        seconds = float(np.nanmax(ref.finish_ms)) / 1000.0 if table.num_rows else 0.0
        if not config.quiet:
            click.echo(
                f"calibrating the {engine.name} engine (--calibrate {mode}): the job is "
                f"predicted to take {seconds:.0f} s with the shipped profile",
                err=True,
            )
        return seconds

    cal = calibrate_for_job(engine, mode, base, predicted_job_s=predicted_s, seed=config.seed)
    if not config.quiet and mode != "never":
        m, fit = cal.model, cal.fit
        err = f", fit error {100 * fit['mean_abs_rel_error']:.1f}%" if fit else ""
        how = {
            "probe": f"probe of {cal.points} points in {cal.probe_seconds:.1f} s",
            "cache": f"cached fit of {cal.calibrated_at}",
        }.get(cal.source, cal.source)
        where = f"; {cal.path}" if cal.path else ""
        click.echo(
            f"engine model: a = {float(m.a_ms):.2f} ms, b = {float(m.b_ms):.3f} ms/token, "
            f"c = {float(m.c_ms):.5f} ms/context token, d = {float(m.d_ms):.2f} ms/sampled row "
            f"({how}{err}){where}",
            err=True,
        )
    return cal


def make_loop(
    config: JobConfig, engine: Engine, table: pa.Table, plan: JobPlan, model
) -> ClosedLoop | None:
    """The closed loop of this run (module doc), or None."""
    mode = (config.replan or "auto").lower()
    if mode not in REPLAN_MODES:
        raise ConfigError(f"--replan must be one of {', '.join(REPLAN_MODES)}, not {mode!r}")
    if mode == "off" or (config.policy or "").lower() != "sajax" or table.num_rows < 2:
        return None
    if mode == "auto" and getattr(engine, "computes_on_host", False):
        # A re-plan is JAX work on the cores the engine computes on: measured on the 2-core
        # CPU, llama.cpp's makespan grew 1.45x and attainment fell below FCFS's with the loop on
        # (benchmarks/results/closed-loop.md). --replan on still turns it on there.
        return None
    n = table.num_rows
    lengths = _predicted_output_tokens(table, _length_predictor(config))
    problem = _problem_from_table(table, engine, lengths.tokens)
    ignore = (
        table.column("ignore_eos").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        if "ignore_eos" in table.column_names
        else np.zeros(n, bool)
    )
    online = OnlineLengths(
        tasks=(
            table.column("task").fill_null("default").to_pylist()
            if "task" in table.column_names
            else ["default"] * n
        ),
        hints=np.where(ignore, -1, _int_column(table, "output_tokens_hint", -1)),
        caps=_int_column(table, "max_new_tokens", 256),
        ignore_eos=ignore,
        planned=lengths.tokens,
    )
    ids = [str(x) for x in table.column("id").to_pylist()]
    echo = None
    if not config.quiet:

        def echo(reason: str, pending: int, t_s: float) -> None:
            click.echo(f"re-planning {pending} pending requests at {t_s:.1f} s: {reason}", err=True)

    from sajax.refsim import reference_simulate

    cap_model = model._replace(slots=np.int32(plan.inflight_cap))
    first = reference_simulate(plan.order, problem.input_len, problem.output_len, cap_model)
    loop_config = LoopConfig(every=int(config.replan_every), budget_s=float(config.replan_budget))
    return ClosedLoop(
        problem,
        ids,
        plan.inflight_cap,
        plan.predicted_e2e_ms,
        model,
        engine,
        lengths=online,
        config=loop_config,
        objective=OBJECTIVES.get(config.objective, config.objective),
        seed=config.seed,
        on_start=echo,
        predicted_first_ms=first.first_token_ms,
    )
