"""Proposals scored per second by the planner's search: incremental (new) vs full rescore (old).

One instance: ``paper_mix(n)`` on profile gpu-7b-a100 (128 slots), tightness ``--level``. In one
process, one after the other (so the ratio holds on a shared machine):

- ``full (main)``: today's path on main: every proposal re-simulated in full by main's
  ``sajax.simulate`` (loaded from ``git show main:sajax/simulate.py``), ``batch`` orders per
  call (the planner's default: 8 chains x 2 caps = 16), the energy of each.
- ``full (branch)``: the same with this branch's ``simulate`` (the scan without gathers).
- ``incremental``: ``sajax.plan_search.run_chunk``: chains x proposals per step sharing a
  start block, each re-simulated from that block's checkpoint, Metropolis and bookkeeping
  included (what the planner runs).

Each timing is the least CPU time of this process over ``--reps`` calls after a warm-up call
(compile excluded): proposals per CPU-second, which the other jobs of a shared machine disturb
far less than wall time.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/planner_search_speed.py --out r.md
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from batch_runner.workloads.synthetic import TIGHTNESS_LEVELS, mix_problem, paper_mix
from sajax import plan_search as ps
from sajax.objectives.slo import get_objective, objective_params
from sajax.profiles import load_profile
from sajax.simulate import simulate


def main_simulate():
    """``simulate`` of main's sajax/simulate.py (today's full-rescore path)."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(
        ["git", "-C", str(root), "show", "main:sajax/simulate.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "simulate_main.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("simulate_main", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.simulate


def best_time(fn, reps):
    """The least CPU seconds of this process over ``reps`` calls (a shared machine's other
    jobs inflate wall time, not this process's CPU time)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        jax.block_until_ready(fn())
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--level", default="tight")
    ap.add_argument("--batch", type=int, default=16, help="orders per call of the full path")
    ap.add_argument("--chains", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--proposals", type=int, default=2)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="steps per chunk (incremental)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kv", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    model = load_profile("gpu-7b-a100")
    cols = paper_mix(args.n, seed=0, tightness=TIGHTNESS_LEVELS[args.level], model=model)
    problem = jax.tree.map(jnp.asarray, mix_problem(cols, size=args.n))
    n = args.n
    slots = int(model.slots)
    params = objective_params(0.0, scale_ms=1e6)
    energy_fn = get_objective("goodput")
    rng = np.random.default_rng(0)
    old_sim = main_simulate()
    rows = []
    for kv in args.kv:
        kv = bool(kv)
        orders = jnp.asarray(np.stack([rng.permutation(n) for _ in range(args.batch)]), jnp.int32)
        for name, sim in (("full (main)", old_sim), ("full (branch)", simulate)):

            def score(o, sim=sim, kv=kv):
                t = sim(o, problem, model, max_slots=slots, kv=kv)
                return energy_fn(t.first_token_ms, t.finish_ms, problem, params)

            f = jax.jit(jax.vmap(score))
            dt = best_time(lambda f=f, o=orders: f(o), args.reps)
            rows.append((kv, name, args.batch, 1, args.batch / dt))
            print(rows[-1], flush=True)
        for chains in args.chains:
            spec = ps.SearchSpec("goodput", kv, slots, chains, args.proposals, args.block)
            starts = np.stack([rng.permutation(n) for _ in range(chains)])
            models = jax.tree.map(lambda x, c=chains: jnp.broadcast_to(jnp.asarray(x), (c,)), model)
            state = ps.init_state(spec, starts, problem, models, params)
            temps = jnp.full((args.steps, chains), 1e-4, jnp.float32)
            probs = jnp.asarray(ps.move_probs(0.3, 0.5, 0.2, 0.15, 0.15))
            block_p = jnp.asarray(ps.block_weights(n, n, spec.block))
            call = (
                jax.random.key(0),
                temps,
                probs,
                block_p,
                jnp.int32(n),
                problem,
                models,
                params,
                jnp.float32(0.0),
            )
            fn, _ = ps.compile_chunk(spec, state, *call)
            holder = [state]

            def run(fn=fn, holder=holder, call=call):
                holder[0], info = fn(holder[0], *call)
                return info.deltas

            dt = best_time(run, args.reps)
            rate = args.steps * chains * args.proposals / dt
            rows.append((kv, "incremental", chains, args.proposals, rate))
            print(rows[-1], flush=True)
    base = {kv: r[4] for r in rows for kv in [r[0]] if r[1] == "full (main)"}
    lines = [
        f"## Planner search: proposals scored per second (n = {n}, {slots} slots)",
        "",
        f"Command: `{' '.join(sys.argv)}`  ",
        f"Date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, jax {jax.__version__} "
        f"({jax.default_backend()}), {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end (shared machine); paper_mix level {args.level}.",
        "",
        "| KV check | path | orders per call (chains) | proposals/chain | proposals per CPU-s "
        "| x main |",
        "|---|---|---|---|---|---|",
    ]
    for kv, name, b, k, rate in rows:
        lines.append(f"| {kv} | {name} | {b} | {k} | {rate:,.0f} | {rate / base[kv]:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
