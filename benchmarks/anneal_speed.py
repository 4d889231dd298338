"""sajax vs the plain NumPy/Python SA baseline: moves per second and time to a target energy.

Every solver anneals the same random weighted-tardiness instance (OR-Library generator,
TF = RDD = 0.6) with the same Metropolis rule, geometric cooling and automatic temperature range.
Measured in the same process, one after the other, so the ratios are comparable on a shared
machine even when the absolute numbers are not. Solvers:

- ``baseline``: ``baseline_sa.py``, one chain, full O(n) NumPy recompute per move (the paper's
  scheduler); the reference of every ratio.
- ``baseline-delta``: the same, with the energy change computed over the moved segment only
  (NumPy, O(hi - lo)); a stronger baseline, reported as a second ratio.
- ``sajax-full``: ``sajax.anneal`` with the plain energy: the same full-range moves and the
  same full O(n) recompute per move as the baseline (like for like).
- ``sajax-window-L``: ``sajax.anneal`` with the incremental weighted tardiness
  (``sajax.incremental``): moves within a window of L consecutive positions, O(L) delta per
  move; with L >= n the moves are the full-range ones.

Measures:
- moves/s: proposals evaluated per second (sajax: chains x steps x proposals of a run after
  compilation, warm-up included; baselines: one chain), also per CPU-second of this process.
- time to target: every solver runs for the same wall-clock budget with a time-driven
  geometric schedule (sajax compiled beforehand by a short call with the same shapes); the
  targets are 0.5%, 0.1% and 0% above the best energy any solver found (0%: the time to the
  final best); the time is when each first reached it (sajax's history is per chunk, so its
  times are rounded up to a chunk). Every best order is re-scored in float64 NumPy.

    .venv/bin/python benchmarks/anneal_speed.py                # n = 40 and n = 1000
    .venv/bin/python benchmarks/anneal_speed.py --sizes 40 --budget 5
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_sa import baseline_sa  # noqa: E402

import sajax  # noqa: E402
from sajax.objectives.weighted_tardiness import weighted_tardiness_numpy  # noqa: E402


class Solver(NamedTuple):
    name: str
    chains: int = 1
    proposals: int = 1
    chunk: int = 500
    window: int | None = None  # None: full recompute (sajax-full); else the incremental path


# Per size: the wall-clock budget of the time-to-target runs (s), baseline steps for the rate,
# and the sajax solvers.
CONFIG = {
    40: (10.0, 100_000, [Solver("sajax-full", 64), Solver("sajax-window-40", 64, window=40)]),
    1000: (
        40.0,
        5_000,
        [
            Solver("sajax-full", 32, 4, 100),
            Solver("sajax-window-256", 16, window=256),
            Solver("sajax-window-32", 64, window=32),
        ],
    ),
}
TARGETS = (0.005, 0.001, 0.0)


def random_instance(n: int, seed: int, tf: float = 0.6, rdd: float = 0.6):
    rng = np.random.default_rng(seed)
    p = rng.integers(1, 101, n)
    w = rng.integers(1, 11, n)
    total = p.sum()
    d = rng.integers(int(total * (1 - tf - rdd / 2)), int(total * (1 - tf + rdd / 2)) + 1, n)
    return p, w, np.maximum(d, 0)


def first_time_at(times, energies, target):
    hit = np.nonzero(np.asarray(energies) <= target)[0]
    return float(np.asarray(times)[hit[0]]) if hit.size else None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sajax_problem(solver: Solver, p, w, d):
    if solver.window is None:
        return sajax.objectives.weighted_tardiness(p, w, d)
    return sajax.objectives.weighted_tardiness(p, w, d, incremental=True, window=solver.window)


def sajax_rate(solver: Solver, n: int, p, w, d, seconds: float = 3.0) -> tuple[float, float]:
    """(moves per wall second, moves per CPU second) of one ``sajax.anneal`` call."""
    energy_fn, data = sajax_problem(solver, p, w, d)
    opts = dict(data=data, chains=solver.chains, proposals=solver.proposals)
    opts["chunk_size"] = solver.chunk
    per_step = solver.chains * solver.proposals
    t = time.perf_counter()
    sajax.anneal(energy_fn, jax.random.key(0), n, steps=solver.chunk, **opts)  # compile
    t = time.perf_counter()
    sajax.anneal(energy_fn, jax.random.key(0), n, steps=4 * solver.chunk, **opts)
    rough = 4 * solver.chunk * per_step / (time.perf_counter() - t)
    steps = max(solver.chunk, int(seconds * rough / per_step) // solver.chunk * solver.chunk)
    t, c = time.perf_counter(), cpu_seconds()
    sajax.anneal(energy_fn, jax.random.key(1), n, steps=steps, **opts)
    moves = steps * per_step
    return moves / (time.perf_counter() - t), moves / (cpu_seconds() - c)


def sajax_run(solver: Solver, n: int, p, w, d, budget: float, seed: int) -> dict:
    energy_fn, data = sajax_problem(solver, p, w, d)
    opts = dict(data=data, chains=solver.chains, proposals=solver.proposals)
    opts["chunk_size"] = solver.chunk
    sajax.anneal(energy_fn, jax.random.key(0), n, steps=solver.chunk, **opts)  # compile
    cpu0 = cpu_seconds()
    result = sajax.anneal(
        energy_fn, jax.random.key(seed), n, steps=10**9, time_budget_s=budget, **opts
    )
    best = weighted_tardiness_numpy(result.best_perm, p, w, d)
    assert np.array_equal(np.sort(result.best_perm), np.arange(n)), "not a permutation"
    assert abs(best - float(result.best_energy)) <= 1e-6 * max(best, 1.0), "cached != exact"
    return dict(
        best=best,
        times=np.asarray(result.history.elapsed_s),
        energies=np.asarray(result.history.best_energy, np.float64),
        cpu_share=(cpu_seconds() - cpu0) / result.elapsed_s,
    )


def baseline_rate(n: int, p, w, d, steps: int, seed: int, delta: bool) -> tuple[float, float]:
    t, c = time.perf_counter(), cpu_seconds()
    baseline_sa(p, w, d, steps=steps, seed=seed, delta=delta)
    return steps / (time.perf_counter() - t), steps / (cpu_seconds() - c)


def baseline_run(n: int, p, w, d, budget: float, seed: int, delta: bool) -> dict:
    cpu0 = cpu_seconds()
    perm, best, trace = baseline_sa(
        p, w, d, steps=10**9, seed=seed, time_budget_s=budget, record_every=200, delta=delta
    )
    assert weighted_tardiness_numpy(perm, p, w, d) == best
    return dict(
        best=best,
        times=np.array([x[0] for x in trace]),
        energies=np.array([x[2] for x in trace]),
        cpu_share=(cpu_seconds() - cpu0) / budget,
    )


def measure(n: int, seed: int, budget: float | None) -> list[dict]:
    default_budget, base_steps, solvers = CONFIG[n]
    budget = budget or default_budget
    p, w, d = random_instance(n, seed)
    rows = []
    for name, delta in (("baseline", False), ("baseline-delta", True)):
        steps = base_steps * (4 if delta else 1)
        rate, cpu_rate = baseline_rate(n, p, w, d, steps, seed, delta)
        rows.append(dict(name=name, rate=rate, cpu_rate=cpu_rate, config="1 chain"))
        rows[-1].update(baseline_run(n, p, w, d, budget, seed, delta))
    for solver in solvers:
        rate, cpu_rate = sajax_rate(solver, n, p, w, d)
        config = f"{solver.chains} chains x {solver.proposals}"
        rows.append(dict(name=solver.name, rate=rate, cpu_rate=cpu_rate, config=config))
        rows[-1].update(sajax_run(solver, n, p, w, d, budget, seed))
    best = min(r["best"] for r in rows)
    for r in rows:
        r["budget"] = budget
        r["hit"] = [first_time_at(r["times"], r["energies"], (1 + t) * best) for t in TARGETS]
    return rows


def ratio(x: float | None, reference: float | None, budget: float) -> str:
    """reference / x for times, with bounds when one never reached the target."""
    if x is None and reference is None:
        return "neither"
    if x is None:
        return f"< {reference / budget:.2g}x"
    if reference is None:
        return f"> {budget / x:.3g}x"
    return f"{reference / x:.3g}x"


def report(n: int, rows: list[dict]) -> str:
    base, strong = rows[0], rows[1]
    lines = [
        f"n = {n}, budget {rows[0]['budget']:.0f} s per solver, best of all "
        f"{min(r['best'] for r in rows):.0f}",
        "",
        "| solver | config | moves/s | ratio | per CPU-s | ratio | best | cpu share | "
        + " | ".join(f"t to +{100 * t:g}% (ratio vs baseline / baseline-delta)" for t in TARGETS)
        + " |",
        "|" + "---|" * (8 + len(TARGETS)),
    ]
    for r in rows:
        hits = []
        for k in range(len(TARGETS)):
            t = r["hit"][k]
            shown = "never" if t is None else f"{t:.2f} s"
            vs = [ratio(t, ref["hit"][k], r["budget"]) for ref in (base, strong)]
            hits.append(f"{shown} ({vs[0]} / {vs[1]})")
        lines.append(
            f"| {r['name']} | {r['config']} | {r['rate']:,.0f} | "
            f"{r['rate'] / base['rate']:.1f}x | {r['cpu_rate']:,.0f} | "
            f"{r['cpu_rate'] / base['cpu_rate']:.1f}x | {r['best']:.0f} | "
            f"{r['cpu_share']:.2f} | " + " | ".join(hits) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 1000], choices=sorted(CONFIG))
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per run (time to target)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, args {vars(args)}, load {os.getloadavg()}")
    for n in args.sizes:
        print(report(n, measure(n, args.seed, args.budget)), flush=True)
        print()


if __name__ == "__main__":
    main()
