"""Planning a request file: ``sajax plan INPUT`` and the job runner's ``plan_requests``.

A normalized request table (``batch_runner.requests``) becomes a ``Problem``:

- input tokens: an ``input_tokens`` column if present, else an estimate from characters,
  ``ceil(chars / 4) + 4 * messages`` (the same estimate as the ``sim`` engine; a real engine's
  tokenizer is not available without loading it);
- output tokens: ``max_new_tokens`` under ``ignore_eos``, else ``output_tokens_hint`` (capped at
  ``max_new_tokens``), else ``max_new_tokens`` (from the row or its task preset);
- SLOs: the row's ``slo_*_ms`` (null = none), weight from ``weight``.

``plan_requests(table, model, config)`` plans it (``sajax.planner.plan``) and returns the
``Plan`` (order = row indices of ``table``). ``plan_command`` is the CLI: it prints predicted
attainment per task against FCFS and writes the plan as Parquet, sorted by rank::

    id, task, rank, predicted_ttft_ms, predicted_tpot_ms, predicted_e2e_ms, predicted_slo_met
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import jax
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sajax.engine_model import EngineModel
from sajax.metrics import attainment, problem_metrics
from sajax.planner import Plan, PlanConfig, plan
from sajax.problem import Problem

CHARS_PER_TOKEN = 4.0
TOKENS_PER_MESSAGE = 4
DEFAULT_MAX_NEW_TOKENS = 256
OBJECTIVE_NAMES = {"g": "goodput", "attainment": "attainment", "tardiness": "tardiness"}
POLICY_SEEDS = {"sjf": "sjf", "edf": "edf", "slack": "least_slack"}
ENGINE_PROFILES = {"turbomind": "gpu", "llamacpp": "default", "sim": "default", "auto": "default"}


# -- table -> Problem -----------------------------------------------------------------------


def _ints(table: pa.Table, name: str, default: int) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, default, np.int64)
    col = pc.cast(table.column(name), pa.int64()).fill_null(default)
    return col.to_numpy(zero_copy_only=False).astype(np.int64)


def _floats(table: pa.Table, name: str, default: float) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, default, np.float64)
    col = pc.cast(table.column(name), pa.float64()).fill_null(default)
    return col.to_numpy(zero_copy_only=False).astype(np.float64)


def input_tokens(table: pa.Table) -> np.ndarray:
    """(n,) prompt tokens: the ``input_tokens`` column, else ceil(chars / 4) + 4 per message."""
    n = table.num_rows
    if "input_tokens" in table.column_names:
        given = _ints(table, "input_tokens", -1)
        if np.all(given > 0):
            return given
    else:
        given = np.full(n, -1, np.int64)
    chars = np.zeros(n, np.int64)
    extra = np.zeros(n, np.int64)
    if "prompt" in table.column_names:
        lengths = pc.utf8_length(table.column("prompt")).fill_null(0)
        chars += lengths.to_numpy(zero_copy_only=False).astype(np.int64)
    if "messages" in table.column_names:
        for i, messages in enumerate(table.column("messages").to_pylist()):
            if messages:
                chars[i] += sum(len(str(m.get("content") or "")) for m in messages)
                extra[i] = TOKENS_PER_MESSAGE * len(messages)
    estimate = np.maximum(1, np.ceil(chars / CHARS_PER_TOKEN).astype(np.int64) + extra)
    return np.where(given > 0, given, estimate)


def output_tokens(table: pa.Table) -> np.ndarray:
    """(n,) predicted output tokens (module doc), at least 1."""
    cap = _ints(table, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    cap = np.where(cap > 0, cap, DEFAULT_MAX_NEW_TOKENS)
    hint = _ints(table, "output_tokens_hint", -1)
    ignore = np.zeros(table.num_rows, bool)
    if "ignore_eos" in table.column_names:
        col = table.column("ignore_eos").fill_null(False)
        ignore = col.to_numpy(zero_copy_only=False).astype(bool)
    out = np.where((hint > 0) & ~ignore, np.minimum(hint, cap), cap)
    return np.maximum(out, 1)


def problem_from_table(table: pa.Table) -> Problem:
    """The planner's ``Problem`` of a normalized request table (no padding: plan() pads)."""
    slo = {c: _floats(table, c, np.inf) for c in ("slo_e2e_ms", "slo_ttft_ms", "slo_tpot_ms")}
    return Problem(
        input_len=input_tokens(table).astype(np.int32),
        output_len=output_tokens(table).astype(np.int32),
        slo_e2e_ms=slo["slo_e2e_ms"].astype(np.float32),
        slo_ttft_ms=slo["slo_ttft_ms"].astype(np.float32),
        slo_tpot_ms=slo["slo_tpot_ms"].astype(np.float32),
        weight=_floats(table, "weight", 1.0).astype(np.float32),
        mask=np.ones(table.num_rows, bool),
    )


def plan_requests(
    table: pa.Table, model: EngineModel, config: PlanConfig | None = None, key=None
) -> Plan:
    """Plan the rows of ``table``: ``Plan.order`` holds row indices of ``table``."""
    if table.num_rows == 0:
        raise ValueError("there are no requests to plan")
    return plan(problem_from_table(table), model, config or PlanConfig(), key)


# -- the CLI command ------------------------------------------------------------------------

CACHE_ENV = "SAJAX_JAX_CACHE"  # directory of JAX's persistent compilation cache ("" = off)


def enable_compilation_cache() -> None:
    """Keep compiled planner programs on disk (``$SAJAX_JAX_CACHE``, default
    ``~/.cache/sajax/jax``): a second ``sajax plan`` of a similar size skips compilation, which
    otherwise takes tens of seconds of the time budget on a small CPU."""
    import os

    path = os.environ.get(CACHE_ENV, str(Path.home() / ".cache" / "sajax" / "jax"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)


def _model_for(engine: str, profile: str | None, slots: int | None) -> tuple[EngineModel, str]:
    from sajax.profiles import load_profile

    name = profile or ENGINE_PROFILES.get(engine, "default")
    try:
        model = load_profile(name)
    except ValueError as exc:
        from batch_runner.errors import ConfigError

        raise ConfigError(str(exc)) from None
    if slots:
        model = model._replace(slots=np.asarray(slots, np.asarray(model.slots).dtype))
    return model, str(name)


def _heuristic_plan(problem: Problem, model: EngineModel, policy: str) -> Plan:
    """A plan that keeps one heuristic order (FCFS, SJF, EDF, least slack) at the full cap."""
    config = PlanConfig(
        seeds=(POLICY_SEEDS.get(policy, policy),),
        steps=0,
        blends=False,  # exactly the one heuristic: no blends, relaxed or triage seeds
        relaxed_shares=(),
        triage_rounds=0,
        max_passes=0,  # above PlanConfig.window rows: no window passes either
        polish_rounds=0,  # and no latency polish
        descent_share=0.0,  # nor hit-set descent
        caps=(int(model.slots),),
    )
    return plan(problem, model, config)


def per_task_attainment(table: pa.Table, problem: Problem, first_ms, finish_ms) -> dict:
    """{task: predicted attainment} of given timings (tasks with no SLO are left out)."""
    tasks = (
        table.column("task").fill_null("default").to_pylist()
        if "task" in table.column_names
        else ["default"] * table.num_rows
    )
    tasks = np.asarray(tasks, dtype=object)
    m = problem_metrics(first_ms, finish_ms, problem)
    out = {}
    for task in sorted(set(tasks.tolist())):
        sel = tasks == task
        if np.any(m.has_slo[sel]):
            out[task] = float(attainment(m.met[sel], m.has_slo[sel], problem.weight[sel]))
    return out


def plan_table(table: pa.Table, result: Plan) -> pa.Table:
    """The plan file: one row per request, sorted by rank."""
    order = np.asarray(result.order)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    ids = table.column("id")
    cols = {
        "id": ids.take(pa.array(order)),
        "task": (
            table.column("task").take(pa.array(order))
            if "task" in table.column_names
            else pa.array(["default"] * len(order))
        ),
        "rank": pa.array(rank[order]),
        "predicted_ttft_ms": pa.array(result.ttft_ms[order]),
        "predicted_tpot_ms": pa.array(result.tpot_ms[order]),
        "predicted_e2e_ms": pa.array(result.e2e_ms[order]),
        "predicted_slo_met": pa.array(result.slo_met[order]),
    }
    return pa.table(cols)


def plan_command(
    input: Path,
    out: Path,
    engine: str = "auto",
    policy: str = "sajax",
    objective: str = "g",
    time_budget: float = 10.0,
    chains: int | str = "auto",
    seed: int = 0,
    profile: str | None = None,
    slots: int | None = None,
    slo_scale: str | None = None,
    slo_config: Path | None = None,
    on_bad_rows: str = "error",
    summary_json: Path | None = None,
    quiet: bool = False,
    **_: Any,
) -> int:
    """``sajax plan``: plan a request file and write the order with its predicted metrics."""
    from batch_runner.errors import OutputError
    from batch_runner.presets import load_presets, resolve_slo_scale
    from batch_runner.requests import read_requests

    enable_compilation_cache()
    presets = None
    if slo_config is not None:
        presets = load_presets(slo_config, scale=resolve_slo_scale(slo_scale, engine))
    requests = read_requests(input, slo_config=presets, on_bad_rows=on_bad_rows)
    table = requests.table
    if table.num_rows == 0:
        raise click.ClickException(f"{input}: no valid rows to plan.")
    model, profile_name = _model_for(engine, profile, slots)
    problem = problem_from_table(table)

    fcfs = _heuristic_plan(problem, model, "fcfs")
    if policy == "sajax":
        config = PlanConfig(
            objective=OBJECTIVE_NAMES.get(objective.lower(), objective),
            time_budget_s=time_budget,
            chains=chains,
        )
        result = plan(problem, model, config, jax.random.key(seed))
    else:
        result = _heuristic_plan(problem, model, policy)

    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        pq.write_table(plan_table(table, result), tmp)
        tmp.replace(out)
    except OSError as exc:
        raise OutputError(f"cannot write the plan to {out}: {exc}", path=out) from None

    planned = per_task_attainment(table, problem, result.first_token_ms, result.finish_ms)
    base = per_task_attainment(table, problem, fcfs.first_token_ms, fcfs.finish_ms)
    s = result.summary
    summary = {
        "input": str(input),
        "output": str(out),
        "requests": table.num_rows,
        "policy": policy,
        "profile": profile_name,
        **s.as_dict(),
        "attainment_by_task": planned,
        "fcfs_attainment_by_task": base,
    }
    if summary_json is not None:
        Path(summary_json).write_text(json.dumps(_jsonable(summary), indent=2))
    if not quiet:
        click.echo(
            f"planned {table.num_rows} requests ({policy}, profile {profile_name}) in "
            f"{s.plan_time_s:.1f} s: in-flight cap {s.inflight_cap}, best seed {s.best_seed}"
        )
        click.echo(f"{'task':<20} {'predicted':>10} {'fcfs':>10}")
        for task in sorted(set(planned) | set(base)):
            click.echo(
                f"{task:<20} {planned.get(task, math.nan):>10.1%} {base.get(task, math.nan):>10.1%}"
            )
        click.echo(
            f"{'all':<20} {s.attainment:>10.1%} {s.fcfs_attainment:>10.1%}   "
            f"mean e2e {s.mean_e2e_ms / 1000:.2f} s vs {s.fcfs_mean_e2e_ms / 1000:.2f} s (FCFS)"
        )
        click.echo(f"plan written to {out}")
    return 0


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
