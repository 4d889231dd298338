"""The plan step of a job: the planner's output length per row
(``_predicted_output_tokens``, ``_length_predictor``), the ``Problem`` from the request table
(``_problem_from_table``), the engine model (``_engine_model``), the order and in-flight cap
(``make_plan``: the sajax planner or a heuristic) and the predicted metrics of a plan
(``_predicted_metrics``).

    plan = make_plan(table, engine, config)  # JobPlan(order, inflight_cap, predicted_e2e_ms, info)
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_runner import results as results_mod
from batch_runner.engines.base import Engine, SamplingParams
from batch_runner.errors import UserError
from batch_runner.job.config import JobConfig, JobPlan
from batch_runner.job.engines import _engine_requests
from sajax.engine_model import EngineModel

log = logging.getLogger(__name__)


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


def make_plan(
    table: pa.Table, engine: Engine, config: JobConfig, model: EngineModel | None = None
) -> JobPlan:
    """Order the rows of ``table`` and choose the in-flight cap (the one place plans are made).

    ``sajax``: the annealing planner (``sajax.planner.plan``: order, cap <= slots, predicted
    timings). ``fcfs``: input order; ``sjf``/``edf``/``slack``: ``sajax.heuristics``; these run
    with the engine's full slots, and their predicted timings come from the reference
    simulator. When a module is not there, the job falls back to FCFS and says so on the log.
    ``model``: the engine model to plan with (the job's calibration), else ``_engine_model``.
    """
    n = table.num_rows
    model = model if model is not None else _engine_model(engine, config)
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
            from batch_runner.planning import enable_compilation_cache

            enable_compilation_cache()  # a second job of the same size loads its programs
            cfg = PlanConfig(
                objective=OBJECTIVES.get(config.objective, config.objective),
                time_budget_s=config.time_budget,
                chains=config.chains,
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
