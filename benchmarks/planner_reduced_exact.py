"""Reduced instances of the tightest level, solved exactly: the optimum vs FCFS vs sajax.

The tightest level of the planner table (``paper_mix``, n = 1,000, 128 slots, tightness 6.5)
is too large to solve. A reduced instance keeps its congestion: ``--n`` requests of the same
mix on an engine of ``--slots`` slots (token budget scaled by ``slots / 128``; KV unlimited),
with the tightness scaled by ``(n / slots) / (1000 / 128)`` so that every request's queueing
allowance is the same share of the job as at the full level (``paper_mix`` builds it from
``sum alone / slots``). For each instance, every one of the n! orders is scored at every cap
``1..slots`` by the FAST model (``sajax.simulate``, the planner's model) on the planners'
lengths (oracle), counting the requests that meet their SLO: the exact optimum of attainment
over all orders and caps of that model. FCFS and ``sajax.plan`` (default objective G, a fixed
step count) are scored by the same model. Reports the distribution of optimum / FCFS and
sajax / optimum, and the pooled ratios (sum over instances).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/planner_reduced_exact.py --n 9 --instances 20
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from batch_runner.workloads.synthetic import TIGHTNESS_LEVELS, mix_problem, paper_mix
from sajax.metrics import problem_metrics
from sajax.planner import PlanConfig, plan
from sajax.profiles import load_profile
from sajax.simulate import simulate

FULL_N, FULL_SLOTS = 1000, 128


def reduced_model(slots: int):
    full = load_profile("gpu-7b-a100")
    budget = max(1, round(int(full.token_budget) * slots / FULL_SLOTS))
    return full._replace(
        slots=np.int32(slots), token_budget=np.int32(budget), kv_capacity=np.int32(0)
    )


def met_counts(perms, problem, model, cap: int):
    """Requests meeting their SLO for each order in ``perms`` at in-flight cap ``cap``."""
    m_cap = model._replace(slots=jnp.asarray(cap, jnp.int32))

    def one(p):
        t = simulate(p, problem, m_cap, max_slots=cap, kv=False)
        m = problem_metrics(t.first_token_ms, t.finish_ms, problem, xp=jnp)
        return jnp.sum(m.met & m.has_slo & problem.mask)

    return jax.jit(jax.vmap(one))(perms)


def optimum(problem, model, n: int, chunk: int = 1 << 17) -> int:
    best = 0
    perms = np.array(list(itertools.permutations(range(n))), np.int32)
    for cap in range(1, int(model.slots) + 1):
        for lo in range(0, len(perms), chunk):
            block = perms[lo : lo + chunk]
            if len(block) < chunk:  # one shape for every call: pad with the first order
                block = np.concatenate([block, np.repeat(block[:1], chunk - len(block), 0)])
            best = max(best, int(jnp.max(met_counts(jnp.asarray(block), problem, model, cap))))
            if best == n:
                return best
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=9)
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--level", default="very_tight")
    ap.add_argument("--steps", type=int, default=512)
    args = ap.parse_args()
    model = reduced_model(args.slots)
    tight = TIGHTNESS_LEVELS[args.level] * (args.n / args.slots) / (FULL_N / FULL_SLOTS)
    config = PlanConfig(steps=args.steps, chains=8, chunk_size=64)
    rows = []
    print(
        f"n = {args.n}, slots = {args.slots}, token budget {int(model.token_budget)}, "
        f"tightness {tight:.3f} ({args.level} scaled), {math.factorial(args.n):,} orders x "
        f"{args.slots} caps per instance",
        flush=True,
    )
    print("| instance | FCFS | optimum | sajax | optimum / FCFS | sajax / optimum | s |")
    print("|---|---|---|---|---|---|---|")
    for k in range(args.instances):
        cols = paper_mix(args.n, seed=1000 + k, tightness=tight, model=model)
        problem = mix_problem(cols, size=args.n)
        t0 = time.perf_counter()
        fcfs = int(met_counts(jnp.arange(args.n, dtype=jnp.int32)[None], problem, model,
                              args.slots)[0])  # fmt: skip
        best = optimum(problem, model, args.n)
        result = plan(problem, model, config, jax.random.key(k))
        order = jnp.asarray(result.order, jnp.int32)[None]
        got = int(met_counts(order, problem, model, int(result.inflight_cap))[0])
        rows.append((fcfs, best, got))
        ratio = f"{best / fcfs:.2f}" if fcfs else "inf"
        share = f"{got / best:.0%}" if best else "-"
        print(
            f"| {k} | {fcfs} | {best} | {got} | {ratio} | {share} | "
            f"{time.perf_counter() - t0:.0f} |",
            flush=True,
        )
    f, b, g = (np.array(x) for x in zip(*rows, strict=True))
    print(
        f"\npooled: FCFS {f.sum()} / optimum {b.sum()} / sajax {g.sum()} met of "
        f"{args.n * args.instances}; optimum / FCFS = {b.sum() / max(f.sum(), 1):.2f}x; "
        f"sajax / optimum = {g.sum() / max(b.sum(), 1):.1%}; instances with optimum >= 5x FCFS "
        f"(FCFS > 0): {int(np.sum((f > 0) & (b >= 5 * f)))} of {int(np.sum(f > 0))}; "
        f"instances where sajax hits the optimum: {int(np.sum(g == b))} of {len(b)}"
    )


if __name__ == "__main__":
    main()
