"""Tiny instances against brute force: does sajax find the optimal order?

200 random instances with n in 5..8 requests on a small engine (2 slots, so the order matters).
For each, every one of the n! orders is scored by the FAST model (``sajax.simulate``) with the
planner's exact objective (-G) at the engine's full cap, and ``sajax.plan`` (caps fixed to the
same cap, default search settings, fixed step count) must reach the minimum energy (relative
tolerance 1e-5, float32 sums). Reports the share of instances solved to optimality.

    .venv/bin/python benchmarks/planner_bruteforce.py --instances 200
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sajax.engine_model import make_engine_model
from sajax.objectives.slo import goodput_energy, objective_params
from sajax.planner import PlanConfig, plan
from sajax.problem import make_problem
from sajax.simulate import simulate

MODEL = make_engine_model(slots=2, token_budget=64, a_ms=5.0, b_ms=0.5, c_ms=0.001)


def instance(rng, n):
    inp = rng.integers(4, 160, n)
    out = rng.integers(1, 60, n)
    alone = 5.0 * out + 0.5 * (inp + out)
    slo = alone + rng.uniform(0.0, 1.0, n) * alone.sum() / 2 / rng.uniform(1.0, 3.0)
    return inp, out, slo


@jax.jit
def _energies(perms, problem, model):
    params = objective_params()

    def one(p):
        t = simulate(p, problem, model, max_slots=2, kv=False)
        return goodput_energy(t.first_token_ms, t.finish_ms, problem, params)

    return jax.vmap(one)(perms)


def brute_force(inp, out, slo) -> float:
    n = len(inp)
    problem = make_problem(inp, out, slo_e2e_ms=slo, size=n)
    perms = jnp.asarray(np.array(list(itertools.permutations(range(n))), np.int32))
    return float(jnp.min(_energies(perms, problem, MODEL)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--t-start", type=float, default=PlanConfig().t_start)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    config = PlanConfig(caps=(2,), steps=args.steps, chains=8, chunk_size=64, t_start=args.t_start)
    solved, gaps, t_plan = 0, [], 0.0
    for k in range(args.instances):
        n = int(rng.integers(5, 9))
        inp, out, slo = instance(rng, n)
        best = brute_force(inp, out, slo)
        t0 = time.perf_counter()
        result = plan(make_problem(inp, out, slo_e2e_ms=slo), MODEL, config, jax.random.key(k))
        t_plan += time.perf_counter() - t0
        ok = result.summary.energy <= best + 1e-5 * abs(best)
        solved += ok
        gaps.append((result.summary.energy - best) / abs(best) if best else 0.0)
        if not ok:
            print(f"instance {k} (n={n}): sajax {result.summary.energy:.6g} vs optimum {best:.6g}")
    share = solved / args.instances
    text = "\n".join(
        [
            "## Brute force on tiny instances (n = 5..8)",
            "",
            f"Command: `{' '.join(sys.argv)}`  ",
            f"Machine: {platform.machine()}, jax {jax.__version__} ({jax.default_backend()}); "
            f"date {datetime.date.today()}  ",
            "Optimum: all n! orders scored by the fast model (sajax.simulate), objective -G, "
            "engine with 2 slots, cap fixed at 2.  ",
            f"sajax: {config.chains} chains x {args.steps} steps per instance (plus seeds).",
            "",
            f"- optimum found: **{solved} / {args.instances} = {share:.1%}** (target >= 99 %)",
            f"- worst relative gap to the optimum: {max(gaps):.2e}",
            f"- mean plan time (warm): {t_plan / args.instances:.2f} s",
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
