"""The README's annealing recipes on generated weighted-tardiness instances (no files needed).

Instances (issue 17): for each n, 25 instances by the OR-Library rules, one per (TF, RDD) pair in
{0.2, 0.4, 0.6, 0.8, 1.0}^2 (TF outer, RDD inner), drawn in that order from one
``numpy.random.default_rng(seed)`` (default 0): ``p ~ U{1..100}``, ``w ~ U{1..10}``,
``d ~ U{floor(P (1 - TF - RDD/2)) .. floor(P (1 - TF + RDD/2))}`` with ``P = sum p``, clipped at 0.

Rows: every recipe of the README, run on every instance one call after another (after one call
that compiles), plus ``fast before kicks`` (the README's fast recipe before kicks existed, 7,500
steps with ``restarts=False``: the time and quality the fast recipe is compared with, in the same
run). The batched recipe anneals all 25 instances in one ``anneal_many`` call; its time per
instance is the call's time / 25.

Reference: per instance, the lowest energy of every row and of the ``--reference-recipes``
(default: fast) given ``--reference-scale`` (default 20) times their steps. Gap = (E - ref) /
max(ref, 1); "within 0.1 %" counts gaps <= 0.001. Every best order is re-scored in float64 NumPy.

    .venv/bin/python benchmarks/wt_generated.py                     # n = 100 and 200
    .venv/bin/python benchmarks/wt_generated.py --sizes 100 --reference-scale 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import sajax
from sajax.objectives.weighted_tardiness import weighted_tardiness_numpy

LEVELS = (0.2, 0.4, 0.6, 0.8, 1.0)
# The README's recipes: (name, anneal options). "batched" runs anneal_many over all instances.
RECIPES = {
    "fast": dict(chains=1, proposals=128, select="best", steps=15_000),
    "default": dict(chains=32, steps=40_000),
    "batched": dict(chains=4, proposals=32, select="best", steps=15_000),
}
# The fast recipe as the README gave it before kicks existed (issue 17's "today").
TODAY = (
    "fast before kicks",
    dict(chains=1, proposals=128, select="best", steps=7_500, restarts=False),
)


def generate(
    n: int, seed: int = 0
) -> list[tuple[float, float, np.ndarray, np.ndarray, np.ndarray]]:
    """25 (TF, RDD, p, w, d) instances of size n (module doc)."""
    rng = np.random.default_rng(seed)
    out = []
    for tf in LEVELS:
        for rdd in LEVELS:
            p = rng.integers(1, 101, n)
            w = rng.integers(1, 11, n)
            total = int(p.sum())
            lo, hi = int(total * (1 - tf - rdd / 2)), int(total * (1 - tf + rdd / 2))
            d = rng.integers(lo, hi + 1, n)
            out.append((tf, rdd, p, w, np.maximum(d, 0)))
    return out


def exact(perm, p, w, d) -> float:
    assert np.array_equal(np.sort(perm), np.arange(len(p))), "not a permutation"
    return float(weighted_tardiness_numpy(perm, p, w, d))


def run_single(instances, options: dict, seed: int) -> dict:
    """One ``anneal`` call per instance; times after a compiling call on instance 0."""
    n = len(instances[0][2])
    inc, data = sajax.objectives.weighted_tardiness(*instances[0][2:], incremental=True)
    sajax.anneal(inc, jax.random.key(seed), n, data=data, **dict(options, steps=512))
    energies, times, kicks, acc = [], [], [], []
    for b, (_, _, p, w, d) in enumerate(instances):
        inc, data = sajax.objectives.weighted_tardiness(p, w, d, incremental=True)
        t0 = time.perf_counter()
        r = sajax.anneal(inc, jax.random.key(seed + b), n, data=data, **options)
        times.append(time.perf_counter() - t0)
        energies.append(exact(r.best_perm, p, w, d))
        kicks.append(int(r.restarts.sum()))
        acc.append(float(r.acceptance_rate.mean()))
    return dict(energy=energies, time=times, kicks=kicks, acceptance=acc)


def run_batched(instances, options: dict, seed: int) -> dict:
    n = len(instances[0][2])
    p, w, d = (np.stack([x[k] for x in instances]) for k in (2, 3, 4))
    inc, data = sajax.objectives.weighted_tardiness(p, w, d, incremental=True)
    sajax.anneal_many(inc, jax.random.key(seed), n, data, **dict(options, steps=512))
    t0 = time.perf_counter()
    r = sajax.anneal_many(inc, jax.random.key(seed), n, data, **options)
    per = (time.perf_counter() - t0) / len(instances)
    energies = [exact(r.best_perm[b], p[b], w[b], d[b]) for b in range(len(instances))]
    return dict(
        energy=energies,
        time=[per] * len(instances),
        kicks=[int(k) for k in r.restarts.sum(axis=1)],
        acceptance=[float(a) for a in r.acceptance_rate.mean(axis=1)],
    )


def scaled(options: dict, factor: int) -> dict:
    return dict(options, steps=options["steps"] * factor)


def measure(n: int, args) -> tuple[dict, np.ndarray, list]:
    instances = generate(n, args.seed)
    rows = {}
    for name, options in (TODAY, *RECIPES.items()):
        runner = run_batched if name == "batched" else run_single
        rows[name] = runner(instances, options, args.seed)
        print(f"# n={n} {name}: {np.sum(rows[name]['time']):.1f} s", flush=True)
    cache = Path(args.reference_cache) if args.reference_cache else None
    key = f"n{n}_seed{args.seed}_x{args.reference_scale}_{'_'.join(args.reference_recipes)}"
    stored = json.loads(cache.read_text()) if cache and cache.exists() else {}
    if key in stored:
        long_runs = stored[key]
    else:
        long_runs = {}
        for name in args.reference_recipes:
            runner = run_batched if name == "batched" else run_single
            options = scaled(RECIPES[name], args.reference_scale)
            long_runs[f"{name} x"] = runner(instances, options, 7)["energy"]
        if cache:
            stored[key] = long_runs
            cache.write_text(json.dumps(stored, indent=1))
    reference = np.min([*(r["energy"] for r in rows.values()), *long_runs.values()], axis=0)
    return rows, reference, instances


def table(n: int, rows: dict, reference: np.ndarray, instances: list, args) -> str:
    lines = [
        f"n = {n}: 25 instances, reference = best of every row and of {args.reference_recipes} "
        f"with {args.reference_scale}x their steps",
        "",
        "| recipe | options | within 0.1 % | mean gap | worst gap (TF, RDD) | time per instance "
        "(mean, max) | kicks per call (mean) | acceptance (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    options = dict([TODAY, *RECIPES.items()])
    for name, r in rows.items():
        gap = (np.asarray(r["energy"]) - reference) / np.maximum(reference, 1)
        worst = int(np.argmax(gap))
        tf, rdd = instances[worst][:2]
        shown = ", ".join(f"{k}={v}" for k, v in options[name].items())
        lines.append(
            f"| {name} | {shown} | {int(np.sum(gap <= 1e-3))}/25 | {100 * gap.mean():.3f} % | "
            f"{100 * gap.max():.3f} % ({tf}, {rdd}) | {np.mean(r['time']):.3f} s, "
            f"{np.max(r['time']):.3f} s | {np.mean(r['kicks']):.1f} | "
            f"{np.mean(r['acceptance']):.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--seed", type=int, default=0, help="the instance generator's seed")
    parser.add_argument("--reference-scale", type=int, default=20)
    parser.add_argument(
        "--reference-recipes",
        nargs="+",
        default=["fast"],
        choices=sorted(RECIPES),
        help="the recipes run with --reference-scale times their steps for the reference",
    )
    parser.add_argument("--reference-cache", help="JSON file to keep the long runs' energies in")
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, args {vars(args)}, load {os.getloadavg()}")
    jnp.zeros(1).block_until_ready()
    for n in args.sizes:
        rows, reference, instances = measure(n, args)
        print(table(n, rows, reference, instances, args), flush=True)
        print(f"# load {os.getloadavg()}\n", flush=True)


if __name__ == "__main__":
    main()
