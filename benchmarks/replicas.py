"""Replicas: the multi-replica plan, actor kills, planning at scale, Ray's overhead per request.

Modes (``--mode``, several allowed):

- ``quality``: paper_mix(n) on R = 2, 4, 8 replicas of gpu-7b-a100, SLOs built for the R-replica
  job (``paper_mix(model=slots x R)``: the same share of the queue as one engine's job of the
  same tightness). Total predicted work W = the whole job's predicted makespan on ONE replica
  (fast model, FCFS, all slots); target: the plan's makespan <= 1.05 x W / R. Attainment of
  the sajax plan (``plan_replicas``) against round-robin in file order followed by a
  per-replica sajax plan, each with the same time budget; both scored by the reference
  simulator (what the sim engine runs) and the fast model.
- ``kill``: a sim job of n rows on 4 replicas (paced), one actor killed at a random result,
  ``--trials`` times: rows lost or doubled in the output (target 0).
- ``scale``: planning time and peak memory for n requests over R replicas (``--scale-n``).
- ``overhead``: the same sim workload run in-process (``executor.execute`` on a SimEngine) and
  through one Ray actor (``run_on_replicas``): extra wall time per request.

    .venv/bin/python benchmarks/replicas.py --mode quality kill overhead --out results.md
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from batch_runner.workloads.synthetic import mix_problem, paper_mix
from sajax.metrics import attainment, problem_metrics
from sajax.profiles import load_profile
from sajax.refsim import reference_simulate
from sajax.replicas import ReplicaPlanConfig, plan_replicas, predict


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def ref_score(plan, problem, models) -> tuple[float, float]:
    """(attainment, makespan ms) of the plan under the reference simulator, per replica."""
    n = len(problem.mask)
    first, finish = np.full(n, np.nan), np.full(n, np.nan)
    for j, order in enumerate(plan.orders):
        m = models[j]._replace(slots=np.int32(plan.inflight_caps[j]))
        ref = reference_simulate(order, problem.input_len, problem.output_len, m)
        first[order], finish[order] = ref.first_token_ms[order], ref.finish_ms[order]
    met = problem_metrics(first, finish, problem)
    return float(attainment(met.met, met.has_slo, problem.weight)), float(np.nanmax(finish))


def quality(args) -> list[dict]:
    model = load_profile(args.profile)
    rows = []
    for r in args.replicas:
        cols = paper_mix(
            args.n,
            seed=0,
            tightness=args.tightness,
            model=model._replace(slots=np.int32(r * int(model.slots))),
        )
        problem = mix_problem(cols, size=args.n)
        models = [model] * r
        if args.hetero:  # every other replica at half the speed (each iteration costs 2x)
            slow = model._replace(
                **{f: np.float32(2 * float(getattr(model, f))) for f in ("a_ms", "b_ms", "c_ms")}
            )
            models = [model if j % 2 == 0 else slow for j in range(r)]
        # W / R with speeds: W on the fastest replica, over the summed speeds
        _, one = predict([np.arange(args.n)], problem, [model])
        speeds = sum(1.0 if m is model else 0.5 for m in models)
        work = float(np.nanmax(one)) * r / speeds
        configs = {
            "sajax": ReplicaPlanConfig(
                objective=args.objective, time_budget_s=args.budget, full_caps=args.full_caps
            ),
            "rr+sajax": ReplicaPlanConfig(
                objective=args.objective,
                rebalance=False,
                tail_lpt=False,
                time_budget_s=args.budget,
                replica_share=1.0,  # the whole budget for the per-replica plans
                seeds=("fcfs",),
                assignments=("round_robin",),
                joint=False,
            ),
        }
        # warm-up: compile the per-replica planner and the joint annealer for these shapes, so
        # that neither measured plan pays the compilation out of its budget
        warm = dataclasses.replace(configs["sajax"], time_budget_s=min(10.0, args.budget))
        plan_replicas(problem, models, warm, jax.random.key(1))
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            plan = plan_replicas(problem, models, cfg, jax.random.key(0))
            wall = time.perf_counter() - t0
            att, span = ref_score(plan, problem, models)
            row = {
                "R": r,
                "hetero": bool(args.hetero),
                "plan": name + (" (full caps)" if args.full_caps and name == "sajax" else ""),
                "wall_s": wall,
                "work_over_R_s": work / r / 1e3,
                "makespan_s": span / 1e3,
                "makespan_ratio": span / (work / r),
                "attainment": att,
                "fast_attainment": plan.summary["attainment"],
                "objective": args.objective,
                "goodput": plan.summary["goodput"],
                "mean_e2e_s": plan.summary["mean_e2e_ms"] / 1e3,
                "best_seed": plan.summary["best_seed"],
                "tail_lpt": plan.summary["tail_lpt"],
                "rebalance": plan.summary["rebalance"],
                "stage_end_s": plan.summary["stage_end_s"],
                "stages": plan.summary["stage_energy"],
                "joint": plan.summary["joint"],
            }
            print(json.dumps(row, default=str), flush=True)
            rows.append(row)
    return rows


def kill(args) -> list[dict]:
    """Job-level: run_job on 4 paced sim replicas, one actor killed at a random result."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from batch_runner import ray_pool
    from batch_runner.job import JobConfig, run_job

    os.environ["SAJAX_SIM_PACE"] = str(args.pace)
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="replicas-kill-"))
    n = args.kill_n
    src = tmp / "requests.parquet"
    pq.write_table(
        pa.table(
            {
                "id": [f"q{i:05d}" for i in range(n)],
                "prompt": [f"request {i} " * (1 + i % 7) for i in range(n)],
                "max_new_tokens": [8 + (i % 5) * 8 for i in range(n)],
                "slo_e2e_ms": [5000.0 + 20 * i for i in range(n)],
            }
        ),
        src,
    )
    real = ray_pool.run_on_replicas
    rows = []
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        for trial in range(args.trials):
            k, victim = rng.randint(1, n - 1), rng.randrange(4)
            state = {"n": 0, "left": None}

            def wrapped(pool, *a, on_result, k=k, victim=victim, state=state, **kw):
                def hook(m, j):
                    on_result(m, j)
                    state["n"] += 1
                    if state["n"] == k:
                        pool.kill(victim)

                return real(pool, *a, on_result=hook, **kw)

            ray_pool.run_on_replicas = wrapped
            out = tmp / f"out-{trial}.parquet"
            t0 = time.perf_counter()
            summary = run_job(
                JobConfig(input=src, out=out, engine="sim", policy="edf", replicas=4, quiet=True)
            )
            ids = pq.read_table(out).column("id").to_pylist()
            counts = collections.Counter(ids)
            row = {
                "trial": trial,
                "kill_at_result": k,
                "victim": victim,
                "dead": summary["plan"]["dead_replicas"],
                "replans": summary["plan"]["replans"],
                "lost": n - len(counts),
                "doubled": sum(c - 1 for c in counts.values()),
                "victim_rows": sum(
                    1 for r in summary["replicas"] if r["replica"] == victim and r["rows"]
                ),
                "wall_s": time.perf_counter() - t0,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        ray_pool.run_on_replicas = real
        ray.shutdown()
    return rows


def scale(args) -> list[dict]:
    model = load_profile(args.profile)
    rows = []
    for n in args.scale_n:
        r = args.scale_r
        cols = paper_mix(
            n,
            seed=0,
            tightness=args.tightness,
            model=model._replace(slots=np.int32(r * int(model.slots))),
        )
        problem = mix_problem(cols, size=n)
        cfg = ReplicaPlanConfig(
            objective=args.objective,
            time_budget_s=args.scale_budget,
            window=args.scale_window,
            refresh=False,
            replica_plans=not args.seeds_only,
            joint=not args.seeds_only,
        )
        t0 = time.perf_counter()
        plan = plan_replicas(problem, [model] * r, cfg, jax.random.key(0))
        wall = time.perf_counter() - t0
        s = plan.summary
        row = {
            "n": n,
            "R": r,
            "seeds_only": bool(args.seeds_only),
            "wall_s": wall,
            "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
            "objective": args.objective,
            "attainment": s["attainment"],
            "makespan_s": s["makespan_ms"] / 1e3,
            "tail_lpt": s["tail_lpt"],
            "seed_energy": s["seed_energy"],
            "stages": s["stage_energy"],
            "stage_end_s": s["stage_end_s"],
            "joint": s["joint"],
            "best_seed": s["best_seed"],
        }
        print(json.dumps(row, default=str), flush=True)
        rows.append(row)
    return rows


def overhead(args) -> list[dict]:
    import ray

    from batch_runner.engines.base import EngineRequest
    from batch_runner.engines.sim import SimEngine
    from batch_runner.executor import execute
    from batch_runner.ray_pool import ReplicaPool, run_on_replicas

    n = args.overhead_n
    reqs = [
        EngineRequest(id=f"r{i}", prompt="x" * (40 + i % 200), max_new_tokens=8 + i % 32)
        for i in range(n)
    ]
    model = load_profile("default")
    rows = []
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        for rep in range(args.overhead_reps):
            engine = SimEngine(model)
            engine.start()
            t0, c0 = time.perf_counter(), time.process_time()
            res = execute(engine, reqs, int(model.slots))
            local, local_cpu = time.perf_counter() - t0, time.process_time() - c0
            engine.stop()
            assert len(res.measurements) == n
            pool = ReplicaPool(ray, [{"engine": "sim", "profile": "default"}])
            by_id = {r.id: r for r in reqs}
            got = []
            a0 = ray.get(pool.actors[0].cpu_seconds.remote())
            t0, c0 = time.perf_counter(), time.process_time()
            run_on_replicas(
                pool,
                by_id,
                [list(by_id)],
                {r.id: i for i, r in enumerate(reqs)},
                [int(model.slots)],
                replan=lambda ids, s: {s[0]: ids},
                on_result=lambda m, j, got=got: got.append(m.id),
            )
            remote, driver_cpu = time.perf_counter() - t0, time.process_time() - c0
            actor_cpu = ray.get(pool.actors[0].cpu_seconds.remote()) - a0
            pool.shutdown()
            assert len(got) == n
            row = {
                "rep": rep,
                "n": n,
                "local_s": local,
                "ray_s": remote,
                "overhead_ms_per_request": 1e3 * (remote - local) / n,
                "local_cpu_s": local_cpu,
                "ray_cpu_s": driver_cpu + actor_cpu,
                "driver_cpu_s": driver_cpu,
                "actor_cpu_s": actor_cpu,
                "cpu_overhead_ms_per_request": 1e3 * (driver_cpu + actor_cpu - local_cpu) / n,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        ray.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", nargs="+", default=["quality", "kill", "overhead"])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--replicas", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--tightness", type=float, default=2.2)
    ap.add_argument("--objective", default="attainment", help="goodput | attainment | tardiness")
    ap.add_argument(
        "--free-caps", dest="full_caps", action="store_false", help="sajax plans pick caps"
    )
    ap.add_argument("--hetero", action="store_true", help="every other replica half as fast")
    ap.add_argument("--profile", default="gpu-7b-a100")
    ap.add_argument("--budget", type=float, default=60.0, help="planner seconds per plan")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--kill-n", type=int, default=400)
    ap.add_argument("--pace", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale-n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--scale-r", type=int, default=8)
    ap.add_argument("--scale-budget", type=float, default=600.0)
    ap.add_argument("--scale-window", type=int, default=4096)
    ap.add_argument("--seeds-only", action="store_true", help="scale: seeds + polish, no search")
    ap.add_argument("--overhead-n", type=int, default=5000)
    ap.add_argument("--overhead-reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="append the JSON rows here")
    args = ap.parse_args()
    record = {
        "command": " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}",
        "uptime_before": uptime(),
    }
    modes = {"quality": quality, "kill": kill, "scale": scale, "overhead": overhead}
    for mode in args.mode:
        record[mode] = modes[mode](args)
    record["uptime_after"] = uptime()
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in modes}))


if __name__ == "__main__":
    main()
