"""sajax vs the plain NumPy/Python SA baseline: moves per second and time to a target energy.

Both anneal the same random weighted-tardiness instance (OR-Library generator, TF = RDD = 0.6)
with the same moves, energy (full O(n) recompute), Metropolis rule and automatic temperature
range. Measured in the same process, one after the other, so the ratios are comparable on a
shared machine even when the absolute numbers are not.

- moves/s: proposals evaluated per second (sajax: chains x steps x proposals after compilation,
  warm-up included; baseline: one chain).
- time to target: both run for the same wall-clock budget with a time-driven geometric schedule;
  the target is 0.5% above the best energy either found; the time is when each first reached it
  (sajax compiled beforehand by a short call with the same shapes).

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

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_sa import baseline_sa  # noqa: E402

import sajax  # noqa: E402
from sajax.objectives.weighted_tardiness import weighted_tardiness_numpy  # noqa: E402

# Per size: chains, proposals per step, chunk size, baseline steps for the rate, budget (s).
CONFIG = {40: (64, 1, 500, 100_000, 10.0), 1000: (32, 4, 100, 5_000, 40.0)}


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


def measure(n: int, seed: int, budget: float | None) -> dict:
    chains, proposals, chunk, base_steps, default_budget = CONFIG[n]
    budget = budget or default_budget
    p, w, d = random_instance(n, seed)
    energy_fn, data = sajax.objectives.weighted_tardiness(p, w, d)
    options = dict(data=data, chains=chains, proposals=proposals, chunk_size=chunk)

    # Moves per second (wall) and per CPU-second (robust to sharing the machine).
    t, c = time.perf_counter(), cpu_seconds()
    baseline_sa(p, w, d, steps=base_steps, seed=seed)
    base_rate = base_steps / (time.perf_counter() - t)
    base_cpu_rate = base_steps / (cpu_seconds() - c)
    sajax.anneal(energy_fn, jax.random.key(0), n, steps=chunk, **options)  # compile
    steps = max(chunk, int(20 * base_rate * 1.0 / (chains * proposals)) // chunk * chunk)
    t, c = time.perf_counter(), cpu_seconds()
    sajax.anneal(energy_fn, jax.random.key(1), n, steps=steps, **options)
    sajax_rate = chains * proposals * steps / (time.perf_counter() - t)
    sajax_cpu_rate = chains * proposals * steps / (cpu_seconds() - c)

    # Time to target, same wall-clock budget.
    cpu0 = cpu_seconds()
    _, base_best, trace = baseline_sa(
        p, w, d, steps=10**9, seed=seed, time_budget_s=budget, record_every=200
    )
    base_cpu = cpu_seconds() - cpu0
    cpu0 = cpu_seconds()
    result = sajax.anneal(
        energy_fn,
        jax.random.key(seed),
        n,
        steps=int(10 * sajax_rate * budget / (chains * proposals)),
        time_budget_s=budget,
        **options,
    )
    sajax_cpu = cpu_seconds() - cpu0
    sajax_best = weighted_tardiness_numpy(result.best_perm, p, w, d)
    target = 1.005 * min(base_best, sajax_best)
    t_base = first_time_at([x[0] for x in trace], [x[2] for x in trace], target)
    t_sajax = first_time_at(result.history.elapsed_s, result.history.best_energy, target)
    return dict(
        n=n,
        chains=chains,
        proposals=proposals,
        base_rate=base_rate,
        sajax_rate=sajax_rate,
        rate_ratio=sajax_rate / base_rate,
        cpu_rate_ratio=sajax_cpu_rate / base_cpu_rate,
        base_cpu_rate=base_cpu_rate,
        sajax_cpu_rate=sajax_cpu_rate,
        budget=budget,
        base_best=base_best,
        sajax_best=sajax_best,
        target=target,
        t_base=t_base,
        t_sajax=t_sajax,
        base_cpu_share=base_cpu / budget,
        sajax_cpu_share=sajax_cpu / result.elapsed_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 1000], choices=sorted(CONFIG))
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per run (time to target)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, args {vars(args)}")
    for n in args.sizes:
        r = measure(n, args.seed, args.budget)
        budget, t_base, t_sajax = r["budget"], r["t_base"], r["t_sajax"]
        if t_base is None:
            tt = f"baseline never reached it in {budget:.0f} s: ratio > {budget / t_sajax:.1f}x"
        elif t_sajax is None:
            tt = f"sajax never reached it: ratio < {t_base / budget:.2f}x"
        else:
            tt = f"baseline {t_base:.2f} s, sajax {t_sajax:.2f} s, ratio {t_base / t_sajax:.1f}x"
        print(
            f"n={n}: moves/s baseline {r['base_rate']:,.0f}, sajax {r['sajax_rate']:,.0f} "
            f"({r['chains']} chains x {r['proposals']} proposals), ratio {r['rate_ratio']:.1f}x; "
            f"per cpu-s baseline {r['base_cpu_rate']:,.0f}, sajax {r['sajax_cpu_rate']:,.0f}, "
            f"ratio {r['cpu_rate_ratio']:.1f}x | "
            f"best in {budget:.0f} s: baseline {r['base_best']:.0f}, sajax {r['sajax_best']:.0f}; "
            f"time to <= {r['target']:.0f}: {tt} | cpu share baseline {r['base_cpu_share']:.2f}, "
            f"sajax {r['sajax_cpu_share']:.2f}"
        )


if __name__ == "__main__":
    main()
