"""OR-Library single-machine weighted tardiness (wt40, wt50): solve every instance with sajax.

All 125 instances of a file are annealed at once with ``sajax.anneal_many`` (instances x chains
in one vmapped program). Instances are read from the shared folder, never copied into the project.

    .venv/bin/python benchmarks/orlib_wt.py                 # wt40 and wt50
    .venv/bin/python benchmarks/orlib_wt.py --sizes 40 --chains 64 --steps 12000
    .venv/bin/python benchmarks/orlib_wt.py --incremental --proposals 4   # move deltas

``--incremental`` anneals the incremental weighted tardiness (``sajax.incremental``: exact move
deltas from a cache, ``--proposals`` per step); the default is the full recompute per move.
``--no-restarts`` turns the stagnation kicks off (``sajax.anneal(restarts=False)``, the
annealer before kicks existed).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import jax
import numpy as np

import sajax
from sajax.objectives.weighted_tardiness import weighted_tardiness_numpy

ORLIB = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "orlib-wt"


def load_instances(size: int, folder: Path = ORLIB) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, w, d), each (125, size) int64, from ``wt{size}.txt`` (see the folder's README.txt)."""
    numbers = np.array((folder / f"wt{size}.txt").read_text().split(), dtype=np.int64)
    if numbers.size % (3 * size):
        raise ValueError(f"wt{size}.txt: {numbers.size} numbers is not a multiple of {3 * size}")
    blocks = numbers.reshape(-1, 3, size)
    return blocks[:, 0], blocks[:, 1], blocks[:, 2]


def load_optima(size: int, folder: Path = ORLIB) -> np.ndarray:
    """(125,) optimal (or best known) total weighted tardiness from ``wtopt{size}.txt``."""
    return np.array((folder / f"wtopt{size}.txt").read_text().split(), dtype=np.int64)


def solve_file(size: int, key: jax.Array, incremental: bool = False, **options) -> dict:
    p, w, d = load_instances(size)
    optima = load_optima(size)[: len(p)]
    energy_fn, data = sajax.objectives.weighted_tardiness(p, w, d, incremental=incremental)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = sajax.anneal_many(energy_fn, key, size, data, **options)
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    exact = np.array(
        [weighted_tardiness_numpy(result.best_perm[b], p[b], w[b], d[b]) for b in range(len(p))]
    )
    assert np.all(np.sort(result.best_perm, axis=1) == np.arange(size)), "not a permutation"
    assert np.allclose(exact, result.best_energy), "cached energy differs from the recomputed one"
    assert np.all(exact >= optima), f"below the optimum: instances {np.where(exact < optima)[0]}"
    gap = np.where(optima > 0, (exact - optima) / np.maximum(optima, 1), exact > 0)
    return dict(
        size=size,
        wall_s=wall,
        cpu_s=cpu,
        optimal=int(np.sum(exact == optima)),
        instances=len(p),
        mean_gap_pct=100 * float(np.mean(gap)),
        max_gap_pct=100 * float(np.max(gap)),
        missed=[int(b) + 1 for b in np.where(exact != optima)[0]],
        steps=result.steps,
        stop=result.stop_reason,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 50])
    parser.add_argument("--chains", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--proposals", type=int, default=1)
    parser.add_argument("--select", choices=("first", "best"), default="first")
    parser.add_argument(
        "--restart-patience", type=int, default=None, help="steps before a kick (default: auto)"
    )
    parser.add_argument("--no-restarts", action="store_true", help="no stagnation kicks")
    parser.add_argument("--t-start", type=float, default=0.1)
    parser.add_argument("--t-end", type=float, default=0.003)
    parser.add_argument("--incremental", action="store_true", help="exact move deltas")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus"
    )
    print(f"# jax {jax.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, args {vars(args)}")
    for size in args.sizes:
        stats = solve_file(
            size,
            jax.random.key(args.seed),
            incremental=args.incremental,
            chains=args.chains,
            steps=args.steps,
            chunk_size=args.chunk_size,
            proposals=args.proposals,
            select=args.select,
            restarts=not args.no_restarts,
            restart_patience=args.restart_patience,
            temperature_range=(args.t_start, args.t_end),
        )
        share = stats["cpu_s"] / stats["wall_s"]
        print(
            f"wt{size}: {stats['optimal']}/{stats['instances']} optimal, mean gap "
            f"{stats['mean_gap_pct']:.4f}%, max gap {stats['max_gap_pct']:.3f}%, "
            f"wall {stats['wall_s']:.1f} s (cpu {stats['cpu_s']:.1f} s, {share:.2f} cores), "
            f"steps {stats['steps']}, missed {stats['missed']}"
        )


if __name__ == "__main__":
    main()
