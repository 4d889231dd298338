"""The plan-and-execute step of a job on N engine replicas (``sajax-batch --replicas N``).

``run_job`` calls ``run_replicated`` instead of its single-engine step when ``--replicas`` is
set; reading, the checkpoint, ``--resume``, writing the results and the summary stay the job's.

1. Ray: ``--ray-address`` (an existing cluster), else a local Ray started here and stopped after
   (``batch_runner.ray_pool.ray_session``). One actor per replica, each building its engine
   from the job's options (``--engine``, ``--model``, ``--slots``; ``--replica-profiles
   P1,P2,...`` gives each sim replica its own profile; ``--threads`` the llama.cpp threads).
2. Plan: ``sajax.replicas.plan_replicas`` over one ``EngineModel`` per replica (the sim
   engine's own, else the replica's profile): the replica of each request and the order on
   each. ``--policy fcfs|sjf|edf|slack``: that order, dealt least-loaded, no search.
3. Execute: ``batch_runner.ray_pool.run_on_replicas``. Each finished row is checkpointed with
   its ``replica``. A replica that dies has its unfinished requests (and the survivors' not yet
   submitted ones) re-planned on the survivors, with a short budget; if all die, the job ends
   with exit 3 and ``--resume`` continues it.

Ranks: the plan's rows ordered by predicted first-token time over all replicas (a resumed job
continues after the ranks it has). Times: each replica's rows are timed from that replica's
start; the replicas start together.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from batch_runner import results as results_mod
from batch_runner.engines.base import EngineError, SamplingParams, usable_cpus
from batch_runner.errors import ConfigError
from batch_runner.progress import JobProgress

log = logging.getLogger(__name__)

REPLAN_BUDGET_S = 5.0  # planner seconds for re-planning after a replica died (at most)


class _TokenCounts:
    """Stands in for an engine where the job only needs ``count_tokens`` (counted remotely)."""

    def __init__(self, counts: dict[str, int]):
        self.counts = counts

    def count_tokens(self, request) -> int:
        return self.counts[request.id]


def replica_profiles(config, n: int) -> list[str | None]:
    raw = getattr(config, "replica_profiles", None)
    if not raw:
        return [config.profile] * n
    names = [p.strip() for p in str(raw).split(",") if p.strip()]
    if len(names) != n:
        raise ConfigError(
            f"--replica-profiles names {len(names)} profile(s) for --replicas {n}; "
            "give one per replica, separated by commas"
        )
    return names


def replica_options(config) -> list[dict[str, Any]]:
    """The engine options of each replica (``replica_worker.make_replica_engine``)."""
    from batch_runner.engines.sim import PACE_ENV

    n = int(config.replicas)
    if n < 1:
        raise ConfigError(f"--replicas must be >= 1, got {n}")
    engine = config.engine
    if engine == "auto":
        from batch_runner.job.engines import _auto_engine

        engine = _auto_engine()
    threads = getattr(config, "threads", None) or max(1, usable_cpus() // n)
    pace = os.environ.get(PACE_ENV) or None
    out = []
    for profile in replica_profiles(config, n):
        opt = {"engine": engine, "profile": profile, "model": config.model, "slots": config.slots}
        opt |= {"threads": threads, "seed": config.seed}
        if pace:
            opt["sim_pace"] = pace
        if engine == "turbomind":
            opt["num_gpus"] = 1  # one replica per GPU
        out.append({k: (str(v) if k == "model" and v is not None else v) for k, v in opt.items()})
    return out


def replica_model(info: dict[str, Any], profile: str | None, config):
    """The EngineModel to plan replica ``info`` with (its own, else its profile); ``--slots``."""
    from sajax.engine_model import engine_model_from_mapping
    from sajax.profiles import load_profile

    if info.get("model"):
        model = engine_model_from_mapping(info["model"])
    else:
        name = profile or info.get("default_profile") or "default"
        try:
            model = load_profile(name)
        except ValueError as exc:
            raise ConfigError(f"--profile: {exc}") from exc
    if config.slots:
        model = model._replace(slots=np.int32(config.slots))
    return model


def plan_config(config, budget: float | None):
    from batch_runner.job.plan_step import OBJECTIVES, POLICY_HEURISTICS
    from sajax.replicas import ReplicaPlanConfig

    policy = (config.policy or "sajax").lower()
    objective = OBJECTIVES.get(config.objective, config.objective)
    if policy == "sajax":
        return ReplicaPlanConfig(objective=objective, time_budget_s=budget)
    seed = "fcfs" if policy == "fcfs" else POLICY_HEURISTICS.get(policy, policy)
    return ReplicaPlanConfig(
        objective=objective,
        seeds=(seed,),
        assignments=("least_loaded",),
        replica_plans=False,
        joint=False,
    )


def run_replicated(config, table: pa.Table, todo_mask, ckpt, done: pa.Table) -> dict[str, Any]:
    """Plan and run the rows of ``table[todo_mask]`` on ``config.replicas`` replicas; returns
    ``engine``, ``profile``, ``plan`` (the summary's plan info), ``plan_time_s``, ``stopped_by``
    (a signal number when interrupted)."""
    import jax

    from batch_runner.job import config as job_config
    from batch_runner.job import engines as job_engines
    from batch_runner.job import plan_step
    from batch_runner.ray_pool import ReplicaPool, ray_session
    from sajax.replicas import plan_replicas

    todo = table.filter(todo_mask)
    options = replica_options(config)
    profiles = replica_profiles(config, len(options))
    with ray_session(getattr(config, "ray_address", None)) as ray:
        try:
            pool = ReplicaPool(ray, options)
        except EngineError as exc:
            raise job_config.EngineDied(str(exc)) from exc
        try:
            engine_name = pool.info[0]["name"]
            models = [replica_model(i, p, config) for i, p in zip(pool.info, profiles, strict=True)]
            requests = job_engines._engine_requests(todo, SamplingParams(seed=config.seed))
            by_id = {r.id: r for r in requests}
            t_plan = time.monotonic()
            counts = dict(zip(by_id, pool.count_tokens(requests), strict=True))
            lengths = plan_step._predicted_output_tokens(todo, plan_step._length_predictor(config))
            problem = plan_step._problem_from_table(todo, _TokenCounts(counts), lengths.tokens)
            key = jax.random.key(config.seed)
            rplan = plan_replicas(problem, models, plan_config(config, config.time_budget), key)
            plan_time_s = time.monotonic() - t_plan
            ids = [r.id for r in requests]
            orders = [[ids[i] for i in o] for o in rplan.orders]
            first_rank = 1 + max(done.column("rank").to_pylist(), default=-1)
            by_start = np.lexsort((rplan.replica, rplan.first_token_ms))
            ranks = {ids[i]: first_rank + k for k, i in enumerate(by_start)}
            predicted = {ids[i]: float(rplan.finish_ms[i]) for i in range(len(ids))}
            row_of = {rid: i for i, rid in enumerate(ids)}

            def replan(todo_ids: list[str], survivors: list[int]) -> dict[int, list[str]]:
                rows = np.asarray([row_of[i] for i in todo_ids], np.int64)
                sub = type(problem)(*(np.asarray(x)[rows] for x in problem))
                budget = min(config.time_budget or REPLAN_BUDGET_S, REPLAN_BUDGET_S)
                cfg = plan_config(config, budget)
                again = plan_replicas(sub, [models[s] for s in survivors], cfg, key)
                return {
                    s: [todo_ids[i] for i in o]
                    for s, o in zip(survivors, again.orders, strict=True)
                }

            planned = _Planned(
                pool, engine_name, by_id, orders, ranks, rplan.inflight_caps, predicted, replan
            )
            run, stopped = _execute(config, planned, _JobRows(table, todo, done, ckpt))
        finally:
            pool.shutdown()
    plan_info = {
        "policy": config.policy,
        "replicas": len(options),
        "inflight_caps": rplan.inflight_caps,
        **{k: v for k, v in rplan.summary.items() if k != "replicas"},
        "predicted_replicas": rplan.summary["replicas"],
        "dead_replicas": run.dead,
        "replica_errors": {str(k): v for k, v in run.errors.items()},
        "replans": run.replans,
    }
    return {
        "engine": engine_name,
        "profile": config.replica_profiles or config.profile or pool.info[0].get("profile"),
        "plan": plan_info,
        "plan_time_s": plan_time_s,
        "stopped_by": stopped,
    }


@dataclasses.dataclass(frozen=True)
class _Planned:
    """What the execute step runs: the pool, the requests and the plan over the replicas."""

    pool: Any  # batch_runner.ray_pool.ReplicaPool
    engine_name: str
    by_id: dict[str, Any]  # request id -> engine request
    orders: list[list[str]]  # per replica, request ids in submission order
    ranks: dict[str, int]  # request id -> rank in the results
    inflight_caps: list[int]  # per replica
    predicted: dict[str, float]  # request id -> predicted finish (ms)
    replan: Callable[[list[str], list[int]], dict[int, list[str]]]  # after a replica died


@dataclasses.dataclass(frozen=True)
class _JobRows:
    """The job's rows: the whole input, the rows to run now, those done before, the checkpoint."""

    table: pa.Table
    todo: pa.Table
    done: pa.Table
    ckpt: Any  # batch_runner.checkpoint.Checkpoint


def _execute(config, planned: _Planned, rows: _JobRows) -> tuple[Any, int | None]:
    """Run ``planned`` (``ray_pool.run_on_replicas``), checkpointing every finished row with
    its replica; returns the run and the signal that stopped it (None: it ran to the end)."""
    import pyarrow.compute as pc

    from batch_runner import ray_pool
    from batch_runner.job.run_step import _checkpoint_row, count_finished
    from batch_runner.job.stops import _stop_on_signals, engine_died

    table, todo, done, ckpt = rows.table, rows.todo, rows.done, rows.ckpt
    engine_name = planned.engine_name
    row_info = {
        str(row["id"]): row
        for row in todo.select(
            [c for c in ("id", "weight", *results_mod.SLO_COLUMNS) if c in todo.column_names]
        ).to_pylist()
    }
    with JobProgress(len(todo) + done.num_rows, initial=done.num_rows, quiet=config.quiet) as bar:
        if done.num_rows:
            done_ids = pa.array(done.column("id").to_pylist(), type=pa.string())
            before = results_mod.assemble(table.filter(pc.is_in(table["id"], done_ids)), done)
            bar.seed(
                met=before.column("slo_met").to_pylist(),
                weight=results_mod._floats(before, "weight", default=1.0),
                errors=before.num_rows - before.column("error").null_count,
            )

        def on_result(m, j: int) -> None:
            row = _checkpoint_row(m, ckpt.run, planned.predicted[m.id], engine_name)
            ckpt.add(row | {"replica": j})
            count_finished(bar, row_info[m.id], m)

        with _stop_on_signals() as sig:

            def should_stop() -> bool:
                ckpt.maybe_flush()
                return bool(sig)

            try:
                run = ray_pool.run_on_replicas(  # looked up now: tests and benchmarks wrap it
                    planned.pool,
                    planned.by_id,
                    planned.orders,
                    planned.ranks,
                    planned.inflight_caps,
                    replan=planned.replan,
                    on_result=on_result,
                    should_stop=should_stop,
                    max_retries=config.max_retries,
                    stall_timeout_s=config.stall_timeout or None,
                )
            except EngineError as exc:
                bar.close()
                total = done.num_rows + todo.num_rows
                raise engine_died(f"the {engine_name} replicas", exc, config, ckpt, total) from exc
    stopped = sig.get("signum", signal.SIGINT) if run.stopped else None
    return run, stopped


def replica_summary(results: pa.Table, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Per replica: rows, errors, measured attainment, mean / max e2e (its timeline's end), its
    load (summed e2e - ttft: time its requests spent decoding) and the plan's prediction."""
    from sajax.metrics import attainment

    if "replica" not in results.column_names:
        return []
    rep = results.column("replica").to_numpy(zero_copy_only=False)
    rep = np.where(np.isnan(rep.astype(float)), -1, rep).astype(int)
    met = results.column("slo_met").to_numpy(zero_copy_only=False)
    has = np.array([v is not None for v in results.column("slo_met").to_pylist()])
    e2e = results_mod._floats(results, "e2e_ms")
    ttft = results_mod._floats(results, "ttft_ms")
    weight = results_mod._floats(results, "weight", default=1.0)
    errors = results.column("error").is_valid().to_numpy(zero_copy_only=False)
    predicted = plan.get("predicted_replicas") or []
    out = []
    for j in range(int(plan.get("replicas") or rep.max() + 1)):
        sel = rep == j
        ok = sel & ~errors
        m = np.asarray([bool(x) for x in np.where(has & sel, met, False)])
        entry = {
            "replica": j,
            "rows": int(sel.sum()),
            "errors": int((sel & errors).sum()),
            "attainment": float(attainment(m[sel & has], has[sel & has], weight[sel & has]))
            if (sel & has).any()
            else None,
            "mean_e2e_ms": float(np.mean(e2e[ok])) if ok.any() else None,
            "makespan_ms": float(np.max(e2e[ok])) if ok.any() else None,
            "busy_ms": float(np.sum(e2e[ok] - ttft[ok])) if ok.any() else 0.0,
            "died": j in (plan.get("dead_replicas") or []),
        }
        if j < len(predicted):
            entry["predicted_attainment"] = predicted[j].get("attainment")
            entry["predicted_makespan_ms"] = predicted[j].get("makespan_ms")
        out.append(entry)
    return out
