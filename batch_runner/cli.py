"""The command line: ``sajax-batch INPUT --out OUTPUT`` and the ``sajax`` command group.

Parsing and error mapping only; the work lives in the modules each command hands over to
(imported lazily, so ``--help`` is fast and a missing optional part fails only its command):

====================  ===========================================================
sajax-batch / run     batch_runner.job.run_job(JobConfig(...))
sajax validate        batch_runner.requests.read_requests (here, complete)
sajax plan            batch_runner.planning.plan_command(**options)
sajax calibrate       batch_runner.calibrate.calibrate_command(**options)
sajax report          batch_runner.report.report_command(**options)
sajax workloads       the click group batch_runner.workloads.cli.workloads
====================  ===========================================================

Errors a user can fix (``batch_runner.errors.UserError``: bad input, bad presets, unwritable
output) are ``click.ClickException`` s with exit code 2: one paragraph on stderr, no traceback.
The option groups several commands share live in ``batch_runner.cli_options``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from batch_runner.cli_loop import closed_loop_options
from batch_runner.cli_options import (
    CONTEXT,
    DEFAULT_TIME_BUDGET_S,
    ENGINES,
    OBJECTIVES,
    ON_BAD_ROWS,
    POLICIES,
    SLO_SCALES,
    _engine_option,
    _file,
    _on_bad_rows_option,
    _planner_options,
    _slo_options,
)
from batch_runner.errors import InputError
from batch_runner.executor import DEFAULT_STALL_TIMEOUT_S
from batch_runner.replica_cli import replica_options

# --- sajax-batch ----------------------------------------------------------------------------


@click.command("sajax-batch", context_settings=CONTEXT)
@click.argument("input_path", metavar="INPUT", type=_file)
@click.option(
    "--out",
    "-o",
    required=True,
    type=_file,
    help="Results Parquet file: every input column plus output_text, latencies and slo_met.",
)
@_engine_option(
    "Engine to run on: llamacpp (CPU), turbomind (LMDeploy, GPU), sim (simulator, no text); "
    "auto picks turbomind when a GPU and lmdeploy are present, else llamacpp."
)
@_planner_options
@_slo_options
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="Model to load: a GGUF file for llamacpp, a model directory for turbomind "
    "[default: SmolLM2-135M-Instruct for llamacpp].",
)
@click.option(
    "--length-predictor",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="TOML with [output_lengths.<task>] tables (written by `sajax calibrate --history`): "
    "rows with no output_tokens_hint and no ignore_eos are planned with their task's median "
    "output length (capped at max_new_tokens) instead of max_new_tokens [default: the "
    "--profile file's tables, if it has them].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted job from its checkpoint parts next to --out.",
)
@_on_bad_rows_option
@click.option(
    "--summary-json", type=_file, default=None, help="Also write the job summary as JSON here."
)
@click.option("--report", type=_file, default=None, help="Also write an HTML report here.")
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_STALL_TIMEOUT_S,
    show_default=True,
    help="Seconds without any event from the engine, while requests are in flight, after which "
    "the engine counts as dead (exit 3; finished rows are saved, --resume continues); 0 = never.",
)
@closed_loop_options
@replica_options
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def batch_main(
    input_path: Path,
    out: Path,
    engine: str,
    policy: str,
    objective: str,
    time_budget: float,
    chains: int | str,
    seed: int,
    profile: str | None,
    slots: int | None,
    slo_config: Path | None,
    slo_scale: str | None,
    model: Path | None,
    length_predictor: Path | None,
    resume: bool,
    on_bad_rows: str,
    summary_json: Path | None,
    report: Path | None,
    stall_timeout: float,
    replicas: int,
    ray_address: str | None,
    replica_profiles: str | None,
    quiet: bool,
    **loop: Any,
) -> None:
    """Plan and run a batch of LLM requests (INPUT, Parquet) so that as many as possible meet
    their SLOs; write the results to --out."""
    from batch_runner.parquet_io import rejects_path, write_parquet_atomic
    from batch_runner.requests import read_requests

    _refuse_overwriting_input(input_path, out)
    from batch_runner.presets import resolve_slo_scale

    # None for --engine auto: run_job resolves it once it knows the engine (gpu for turbomind).
    scale = resolve_slo_scale(slo_scale, engine)
    presets = _load_presets(slo_config, scale)
    requests = read_requests(input_path, slo_config=presets, on_bad_rows=on_bad_rows)
    if requests.rejects is not None:
        rejected = write_parquet_atomic(requests.rejects, rejects_path(out))
        _say(quiet, f"set aside {requests.rejects.num_rows} bad rows in {rejected}")
    if requests.table.num_rows == 0:
        raise InputError(
            f"{input_path}: all {requests.num_input_rows} rows are invalid; see the "
            f"reject_reason column in {rejects_path(out)}.",
            path=input_path,
            row_count=requests.num_input_rows,
        )
    _say(quiet, _describe(requests, presets))

    job = importlib.import_module("batch_runner.job")
    config = job.JobConfig(
        input=input_path,
        out=out,
        engine=engine,
        policy=policy,
        objective=objective,
        time_budget=time_budget,
        chains=chains,
        seed=seed,
        slo_config=slo_config,
        slo_scale=scale,
        profile=profile,
        length_predictor=length_predictor,
        model=model,
        slots=slots,
        resume=resume,
        on_bad_rows=on_bad_rows,
        summary_json=summary_json,
        report=report,
        quiet=quiet,
        stall_timeout=stall_timeout,
        **loop,
        replicas=replicas,
        ray_address=ray_address,
        replica_profiles=replica_profiles,
    )
    result = job.run_job(config, requests=requests)
    if isinstance(result, int) and not isinstance(result, bool) and result != 0:
        raise SystemExit(result)


# --- sajax ----------------------------------------------------------------------------------


class _SajaxGroup(click.Group):
    """A click group whose ``workloads`` command is a group defined in another module."""

    lazy = {"workloads": ("batch_runner.workloads.cli", "workloads")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module_name, attr = self.lazy[name]
        try:
            module = _optional_module(module_name)
        except ImportError as e:  # the module is there but broken: say so when it is called
            return _unavailable_command(name, f"{module_name} cannot be imported: {e}")
        command = getattr(module, attr, None) if module is not None else None
        if isinstance(command, click.Command):
            return command
        return _unavailable_command(name, f"{module_name}.{attr} is missing")


@click.group(cls=_SajaxGroup, context_settings=CONTEXT)
@click.version_option(package_name="sajax")
def main() -> None:
    """sajax: SLO-aware planning and running of offline LLM batch jobs."""


main.add_command(batch_main, name="run")


@main.command(context_settings=CONTEXT)
@click.argument("input_path", metavar="INPUT", type=_file)
@_slo_options
@_on_bad_rows_option
@click.option(
    "--rejects",
    type=_file,
    default=None,
    help="With --on-bad-rows=skip, also write the bad rows (with reject_reason) here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def validate(
    input_path: Path,
    slo_config: Path | None,
    slo_scale: str | None,
    on_bad_rows: str,
    rejects: Path | None,
    as_json: bool,
) -> None:
    """Check a request file (INPUT) and show what it holds; exit 2 if it cannot be run."""
    from batch_runner.parquet_io import write_parquet_atomic
    from batch_runner.request_summary import summarize_requests
    from batch_runner.requests import read_requests

    presets = _load_presets(slo_config, slo_scale)
    requests = read_requests(input_path, slo_config=presets, on_bad_rows=on_bad_rows)
    summary = summarize_requests(requests.table)
    summary["rejected"] = _reject_counts(requests.rejects)
    summary["renamed"] = dict(requests.renamed)  # input column -> its name in the results
    if rejects is not None and requests.rejects is not None:
        write_parquet_atomic(requests.rejects, rejects)
    if as_json:
        click.echo(json.dumps({"source": str(input_path), **summary}, indent=2))
    else:
        click.echo(_describe(requests, presets))
        for reason, count in summary["rejected"].items():
            click.echo(f"rejected {count}: {reason}")
    if requests.table.num_rows == 0:
        raise InputError(
            f"{input_path}: all {requests.num_input_rows} rows are invalid.",
            path=input_path,
            row_count=requests.num_input_rows,
        )


@main.command(context_settings=CONTEXT)
@click.argument("input_path", metavar="INPUT", type=_file)
@click.option(
    "--out",
    "-o",
    required=True,
    type=_file,
    help="Plan Parquet file: id, rank and predicted ttft/tpot/e2e_ms and slo_met per request.",
)
@_engine_option("Engine whose default profile the plan predicts with (nothing is run).")
@_planner_options
@_slo_options
@_on_bad_rows_option
@click.option("--summary-json", type=_file, default=None, help="Also write a JSON summary here.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def plan(**options: Any) -> None:
    """Plan a request file (INPUT) without running it: the order and its predicted metrics
    against FCFS."""
    _refuse_overwriting_input(options["input_path"], options["out"])
    options["input"] = options.pop("input_path")
    _call("batch_runner.planning", "plan_command", "sajax plan", options)


@main.command(context_settings=CONTEXT)
@_engine_option(
    "Engine to measure (llamacpp, turbomind) or sim to check the fit on the simulator.",
    choices=("llamacpp", "turbomind", "sim"),
)
@click.option(
    "--model", type=click.Path(path_type=Path), default=None, help="Model to load (as for run)."
)
@click.option(
    "--history",
    type=_file,
    multiple=True,
    help="Earlier results files to fit from instead of (or besides) a sweep; repeatable.",
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=_file,
    help="Profile TOML to write (the fitted engine model and output-length predictor).",
)
@click.option(
    "--slots", type=click.IntRange(min=1), default=None, help="Sequence slots of the engine."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sweep.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def calibrate(**options: Any) -> None:
    """Fit an engine profile (iteration-time model, output lengths) from a sweep or history."""
    _call("batch_runner.calibrate", "calibrate_command", "sajax calibrate", options)


@main.command(context_settings=CONTEXT)
@click.argument("results", type=_file)
@click.option(
    "--out", "-o", required=True, type=_file, help="HTML report to write (plots and tables)."
)
@click.option("--summary-json", type=_file, default=None, help="Also write the summary as JSON.")
def report(**options: Any) -> None:
    """Write an HTML report (attainment per task, latency CDFs, plan vs actual) of a results
    file."""
    _call("batch_runner.report", "report_command", "sajax report", options)


# --- helpers --------------------------------------------------------------------------------


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text)


def _load_presets(slo_config: Path | None, scale: str | None):
    if slo_config is None:
        return None
    from batch_runner.presets import load_presets

    return load_presets(slo_config, scale=scale)


def _refuse_overwriting_input(input_path: Path, out: Path) -> None:
    from batch_runner.parquet_io import rejects_path

    for target in (out, rejects_path(out)):
        if target.resolve() == input_path.resolve():
            raise click.UsageError(
                f"--out {out} would overwrite the input {input_path}; choose another path."
            )


def _describe(requests, presets) -> str:
    from batch_runner.request_summary import describe_requests

    return describe_requests(requests, presets)


def _reject_counts(rejects) -> dict[str, int]:
    if rejects is None:
        return {}
    counts = rejects.group_by("reject_reason").aggregate([("reject_reason", "count")])
    reasons = counts["reject_reason"].to_pylist()
    pairs = zip(reasons, counts["reject_reason_count"].to_pylist(), strict=True)
    return dict(sorted(pairs, key=lambda kv: -kv[1]))


def _optional_module(name: str) -> ModuleType | None:
    """Import ``name``; None if that module itself does not exist (yet)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            return None
        raise


def _call(module_name: str, function: str, command: str, options: dict[str, Any]) -> None:
    module = _optional_module(module_name)
    target = getattr(module, function, None) if module is not None else None
    if target is None:
        raise click.ClickException(
            f"`{command}` is not available yet ({module_name}.{function} is missing)."
        )
    result = target(**options)
    if isinstance(result, int) and not isinstance(result, bool) and result != 0:
        raise SystemExit(result)


def _unavailable_command(name: str, why: str) -> click.Command:
    @click.command(
        name,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True, **CONTEXT},
        help=f"(not available yet: {why})",
    )
    def unavailable() -> None:
        raise click.ClickException(f"`sajax {name}` is not available yet ({why}).")

    return unavailable


__all__ = [
    "DEFAULT_TIME_BUDGET_S",
    "ENGINES",
    "OBJECTIVES",
    "ON_BAD_ROWS",
    "POLICIES",
    "SLO_SCALES",
    "batch_main",
    "main",
]
