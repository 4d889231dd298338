"""sajax vs the plain NumPy/Python SA baseline: moves per second and time to a target energy.

Every solver anneals the same random weighted-tardiness instance (OR-Library generator,
TF = RDD = 0.6) with the same moves, the same Metropolis rule, geometric cooling and the same
automatic temperature range. Measured in one process, one after the other, so the ratios are
comparable on a shared machine even when the absolute numbers are not. Solvers:

- ``baseline``: ``baseline_sa.py``, one chain, full O(n) NumPy recompute per move (the paper's
  scheduler); the reference of every ratio.
- ``baseline-delta``: the same, with the energy change computed over the moved segment only
  (NumPy, O(hi - lo)); a stronger baseline, reported as a second ratio.
- ``sajax-full``: ``sajax.anneal`` with the plain energy: the same full O(n) recompute per move
  as the baseline (like for like), many chains.
- ``sajax-delta``: ``sajax.anneal`` with the incremental weighted tardiness
  (``sajax.incremental``): the same full-range moves scored by exact deltas from a cache, K
  proposals per step of which the first that passes is taken (exact sequential Metropolis).
- ``sajax-delta-best``: the same with ``select="best"``: of the K proposals that pass their
  Metropolis test, the lowest-energy one is taken (a greedier chain; not sequential Metropolis,
  so its "sequential steps" count K per step).

Measures:
- moves/s: moves scored per second (chains x steps x proposals of a run after compilation,
  warm-up included; baselines: one chain), also per CPU-second of this process; for
  ``sajax-delta`` also the sequential Metropolis steps per second it stood for (the taken
  proposal's index + 1, or K when none passed; ``AnnealResult.proposed``).
- time to target: a run's time to a target is when its best-so-far first reached it (from the
  start of the call, warm-up included; sajax compiled beforehand; sajax per chunk, rounded up).
  An annealer's time to a target depends on its schedule length (a long schedule cools late),
  so every solver runs a ladder of schedule lengths (in steps) and its time to the target is
  the best over the ladder; the ladder stops once two lengths in a row reached +0.5%. Repeated
  for ``--seeds`` solver seeds (the instance is fixed); the median over seeds is reported.
  Targets: 0.5% and 0.1% above the best energy any run found.

    .venv/bin/python benchmarks/anneal_speed.py                # n = 40 and n = 1000
    .venv/bin/python benchmarks/anneal_speed.py --sizes 1000 --seeds 5
    .venv/bin/python benchmarks/anneal_speed.py --sizes 1000 --only sajax-delta-best \
        --reference-energy 8404439          # a few solvers, no baselines: one line each

With ``--only`` the baselines are not run; each solver's time to +0.5 % is against
``--reference-energy`` (default: the best of its own runs). Running the script with another
checkout's ``PYTHONPATH`` (e.g. main's) times that checkout's ``sajax`` the same way.
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
    ladder: tuple[int, ...]  # schedule lengths (steps) for the time to target
    chains: int = 1
    proposals: int = 1
    chunk: int = 250
    kind: str = "sajax"  # "sajax", "baseline"
    incremental: bool = False  # sajax: the move-delta path; baseline: the segment delta
    select: str = "first"  # sajax: which passing proposal a step takes (sajax.anneal)


# Ladders with the same relative spacing (1.33-2x) for every solver that reaches the target.
BASELINE_40 = (1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000)
BASELINE_1000 = (50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 600_000, 800_000)
CONFIG = {
    40: [
        Solver("baseline", BASELINE_40, kind="baseline"),
        Solver(
            "baseline-delta",
            BASELINE_40,
            kind="baseline",
            incremental=True,
        ),
        Solver("sajax-full", (100, 200, 300, 500, 750, 1_000, 1_500, 2_000), chains=64, chunk=100),
        Solver(
            "sajax-delta",
            (100, 200, 300, 500, 750, 1_000, 1_500, 2_000),
            chains=8,
            proposals=8,
            chunk=100,
            incremental=True,
        ),
        Solver(
            "sajax-delta-best",
            (100, 200, 300, 500, 750, 1_000, 1_500, 2_000),
            chains=8,
            proposals=8,
            chunk=100,
            incremental=True,
            select="best",
        ),
        Solver(
            "sajax-delta-wide",
            (100, 200, 300, 500, 750, 1_000, 1_500, 2_000),
            chains=32,
            proposals=8,
            chunk=100,
            incremental=True,
        ),
    ],
    1000: [
        Solver("baseline", BASELINE_1000, kind="baseline"),
        Solver(
            "baseline-delta",
            BASELINE_1000,
            kind="baseline",
            incremental=True,
        ),
        Solver("sajax-full", (5_000, 10_000, 20_000), chains=32, proposals=4),
        Solver(
            "sajax-delta",
            tuple(k // 10 for k in BASELINE_1000),
            proposals=32,
            incremental=True,
        ),
        Solver(
            "sajax-delta-best",
            (2_500, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 40_000),
            proposals=128,
            incremental=True,
            select="best",
        ),
    ],
}
TARGETS = (0.005, 0.001)


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


def run(solver: Solver, p, w, d, steps: int, seed: int) -> dict:
    """One annealing run: its best, its (time, best-so-far) trace and its move counts."""
    n = len(p)
    t0, c0 = time.perf_counter(), cpu_seconds()
    if solver.kind == "baseline":
        perm, best, trace = baseline_sa(
            p, w, d, steps=steps, seed=seed, record_every=200, delta=solver.incremental
        )
        assert weighted_tardiness_numpy(perm, p, w, d) == best
        out = dict(
            best=best,
            times=np.array([x[0] for x in trace]),
            energies=np.array([x[2] for x in trace]),
            evaluated=steps,
            sequential=steps,
        )
    else:
        energy_fn, data = sajax.objectives.weighted_tardiness(
            p, w, d, incremental=solver.incremental
        )
        result = sajax.anneal(
            energy_fn,
            jax.random.key(seed),
            n,
            data=data,
            steps=steps,
            chains=solver.chains,
            proposals=solver.proposals,
            select=solver.select,
            chunk_size=solver.chunk,
        )
        best = weighted_tardiness_numpy(result.best_perm, p, w, d)
        assert np.array_equal(np.sort(result.best_perm), np.arange(n)), "not a permutation"
        assert abs(best - float(result.best_energy)) <= 1e-6 * max(best, 1.0), "cached != exact"
        out = dict(
            best=best,
            times=np.asarray(result.history.elapsed_s),
            energies=np.asarray(result.history.best_energy, np.float64),
            evaluated=result.evaluated * solver.chains,
            sequential=int(result.proposed.sum()),
        )
    out.update(wall=time.perf_counter() - t0, cpu=cpu_seconds() - c0, steps=steps)
    return out


def compile_once(solver: Solver, p, w, d) -> None:
    if solver.kind == "sajax":
        run(solver, p, w, d, 2 * solver.chunk, 0)


def rate(solver: Solver, p, w, d, seconds: float) -> dict:
    """Moves per wall / CPU second of one run of about ``seconds`` (after compilation)."""
    probe = run(solver, p, w, d, solver.ladder[0], 0)
    steps = max(solver.ladder[0], int(solver.ladder[0] * seconds / max(probe["wall"], 1e-3)))
    if solver.kind == "sajax":
        steps = max(solver.chunk, steps // solver.chunk * solver.chunk)
    r = run(solver, p, w, d, steps, 1)
    return dict(
        rate=r["evaluated"] / r["wall"],
        cpu_rate=r["evaluated"] / r["cpu"],
        seq_rate=r["sequential"] / r["wall"],
        cpu_share=r["cpu"] / r["wall"],
    )


def ladder_runs(solver: Solver, p, w, d, seed: int, reference: float | None) -> list[dict]:
    """The runs of the ladder; stops after two lengths in a row reached +0.5% of
    ``reference`` (None: run the whole ladder)."""
    runs, streak = [], 0
    for steps in solver.ladder:
        r = run(solver, p, w, d, steps, seed)
        runs.append(r)
        hit = reference is not None and r["best"] <= (1 + TARGETS[0]) * reference
        streak = streak + 1 if hit else 0
        if streak == 2:
            break
    return runs


def measure(n: int, seed: int, seeds: int, seconds: float) -> tuple[list[dict], float]:
    p, w, d = (np.asarray(x) for x in random_instance(n, seed))
    rows = []
    for solver in CONFIG[n]:
        compile_once(solver, p, w, d)
        rows.append(dict(solver=solver, **rate(solver, p, w, d, seconds)))
    # A reference for the ladders' stopping rule: the best of one long baseline-delta run.
    reference = run(CONFIG[n][1], p, w, d, CONFIG[n][1].ladder[-1], 99)["best"]
    for row in rows:
        row["runs"] = [
            ladder_runs(row["solver"], p, w, d, 1000 + s, reference) for s in range(seeds)
        ]
    best = min(
        reference, *(r["best"] for row in rows for per_seed in row["runs"] for r in per_seed)
    )
    for row in rows:
        row["time_to"] = []
        for target in TARGETS:
            per_seed = []
            for runs in row["runs"]:
                hits = [first_time_at(r["times"], r["energies"], (1 + target) * best) for r in runs]
                hits = [h for h in hits if h is not None]
                per_seed.append(min(hits) if hits else None)
            row["time_to"].append(per_seed)
        row["best"] = min(r["best"] for runs in row["runs"] for r in runs)
    return rows, best


def median_time(per_seed: list) -> float | None:
    """Median over seeds; a seed that never reached the target counts as infinitely slow."""
    values = sorted(np.inf if t is None else t for t in per_seed)
    m = float(np.median(values))
    return None if not np.isfinite(m) else m


def report(n: int, rows: list[dict], best: float, seeds: int) -> str:
    base, strong = rows[0], rows[1]
    lines = [
        f"n = {n}, best energy of all runs {best:.0f}, {seeds} seeds per solver",
        "",
        "| solver | config | moves/s | ratio | per CPU-s | ratio | sequential steps/s | ratio | "
        "cpu share | best | "
        + " | ".join(f"t to +{100 * t:g}% (median; vs baseline / baseline-delta)" for t in TARGETS)
        + " | ladder lengths run |",
        "|" + "---|" * (11 + len(TARGETS)),
    ]
    for row in rows:
        s = row["solver"]
        config = "1 chain" if s.kind == "baseline" else f"{s.chains} chains x {s.proposals}"
        config += ", best" if s.select == "best" else ""
        cells = []
        for k in range(len(TARGETS)):
            t = median_time(row["time_to"][k])
            shown = "never" if t is None else f"{t:.3f} s"
            vs = []
            for ref in (base, strong):
                r = median_time(ref["time_to"][k])
                vs.append("-" if t is None or r is None else f"{r / t:.3g}x")
            cells.append(f"{shown} ({vs[0]} / {vs[1]})")
        lengths = ", ".join(f"{runs[-1]['steps']:,}" for runs in row["runs"])
        lines.append(
            f"| {s.name} | {config} | {row['rate']:,.0f} | {row['rate'] / base['rate']:.1f}x | "
            f"{row['cpu_rate']:,.0f} | {row['cpu_rate'] / base['cpu_rate']:.1f}x | "
            f"{row['seq_rate']:,.0f} | {row['seq_rate'] / base['seq_rate']:.1f}x | "
            f"{row['cpu_share']:.2f} | {row['best']:.0f} | "
            + " | ".join(cells)
            + f" | up to {lengths} |"
        )
    lines.append("")
    lines.append("Per-seed times to +0.5% (s; '-' never):")
    for row in rows:
        shown = ", ".join("-" if t is None else f"{t:.3f}" for t in row["time_to"][0])
        lines.append(f"- {row['solver'].name}: {shown}")
    return "\n".join(lines)


def only(n: int, names: list[str], args) -> str:
    """Moves/s and median time to +0.5 % of ``args.reference_energy`` for the named solvers."""
    p, w, d = (np.asarray(x) for x in random_instance(n, args.seed))
    lines = [
        "| solver | moves/s | t to +0.5 % (median) | per seed | best |",
        "|---|---|---|---|---|",
    ]
    for solver in (s for s in CONFIG[n] if s.name in names):
        compile_once(solver, p, w, d)
        r = rate(solver, p, w, d, args.rate_seconds)
        runs = [
            ladder_runs(solver, p, w, d, 1000 + s, args.reference_energy) for s in range(args.seeds)
        ]
        best = min(x["best"] for per_seed in runs for x in per_seed)
        ref = args.reference_energy or best
        per_seed = []
        for seed_runs in runs:
            hits = [
                first_time_at(x["times"], x["energies"], (1 + TARGETS[0]) * ref) for x in seed_runs
            ]
            hits = [h for h in hits if h is not None]
            per_seed.append(min(hits) if hits else None)
        t = median_time(per_seed)
        shown = ", ".join("-" if x is None else f"{x:.3f}" for x in per_seed)
        lines.append(
            f"| {solver.name} | {r['rate']:,.0f} | {'never' if t is None else f'{t:.3f} s'} | "
            f"{shown} | {best:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 1000], choices=sorted(CONFIG))
    parser.add_argument("--seed", type=int, default=0, help="the instance")
    parser.add_argument("--seeds", type=int, default=3, help="solver seeds per ladder")
    parser.add_argument("--rate-seconds", type=float, default=2.0)
    parser.add_argument("--only", nargs="+", help="these solvers only (no baselines)")
    parser.add_argument("--reference-energy", type=float, help="with --only: the +0.5 % base")
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, args {vars(args)}, load {os.getloadavg()}")
    print(f"# sajax from {Path(sajax.__file__).parent}")
    for n in args.sizes:
        if args.only:
            print(f"n = {n}\n\n{only(n, args.only, args)}\n", flush=True)
            continue
        rows, best = measure(n, args.seed, args.seeds, args.rate_seconds)
        print(report(n, rows, best, args.seeds), flush=True)
        print()


if __name__ == "__main__":
    main()
