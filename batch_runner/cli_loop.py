"""The closed loop's options of ``sajax-batch`` (``batch_runner.job.loop_step``)."""

from __future__ import annotations

from collections.abc import Callable

import click


def closed_loop_options(f: Callable) -> Callable:
    """--calibrate, --replan, --replan-every, --replan-budget (passed to JobConfig as is)."""
    options = [
        click.option(
            "--calibrate",
            type=click.Choice(["auto", "always", "never"]),
            default="auto",
            show_default=True,
            help="Fit the engine model on this machine before planning: auto = on a real "
            "engine without --profile, reuse a cached fit (per machine, engine, model, slots; "
            "under ~/.cache/sajax) while valid, else a short probe (at most ~20 s, 5 % of the "
            "job); always = probe now; never = the shipped profile.",
        ),
        click.option(
            "--replan",
            type=click.Choice(["auto", "on", "off"]),
            default="auto",
            show_default=True,
            help="The closed loop (--policy sajax): refit the engine speed and output lengths "
            "while the job runs and re-plan the requests not yet admitted when measured "
            "progress drifts from the prediction. auto = on, except on an engine that computes "
            "on this machine's CPU (llamacpp), where re-planning takes the engine's cores; "
            "on = always; off = run the first plan as is.",
        ),
        click.option(
            "--replan-every",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Also re-plan every N finished requests (0 = only on drift).",
        ),
        click.option(
            "--replan-budget",
            type=click.FloatRange(min=0.05),
            default=2.0,
            show_default=True,
            help="Planner seconds of one re-plan (the engine keeps running meanwhile).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f
