"""The paper-style reference: plain single-chain simulated annealing in NumPy/Python.

Same moves as sajax (swap, insert, segment reversal; same default mix), same energy (a full O(n)
recompute of the total weighted tardiness per proposal, in NumPy), same Metropolis rule and
geometric cooling, and the same automatic temperature range (greedy descent, then a neighbourhood
sample, ``sajax.schedules.auto_range``). One proposal per step, one chain, a Python loop.

    from baseline_sa import baseline_sa
    best_perm, best_energy, trace = baseline_sa(p, w, d, steps=200_000, seed=0)
"""

from __future__ import annotations

import math
import random
import time

import numpy as np

from sajax.schedules import auto_range

MIX = (0.3, 0.5, 0.2)  # swap, insert, reverse: sajax.moves.move_mix() defaults


def propose(perm: np.ndarray, rng: random.Random, mix=MIX) -> np.ndarray:
    """A copy of ``perm`` after one random move (positions i != j drawn uniformly)."""
    n = len(perm)
    i = rng.randrange(n)
    j = (i + 1 + rng.randrange(n - 1)) % n
    r = rng.random()
    q = perm.copy()
    if r < mix[0]:  # swap
        q[i], q[j] = perm[j], perm[i]
    elif r < mix[0] + mix[1]:  # insert: the item at i moves to j
        if i < j:
            q[i:j] = perm[i + 1 : j + 1]
        else:
            q[j + 1 : i + 1] = perm[j:i]
        q[j] = perm[i]
    else:  # reverse the segment between i and j
        lo, hi = min(i, j), max(i, j)
        q[lo : hi + 1] = perm[lo : hi + 1][::-1]
    return q


def make_energy(p, w, d):
    p, w, d = (np.asarray(x, np.float64) for x in (p, w, d))

    def energy(perm: np.ndarray) -> float:
        completion = np.cumsum(p[perm])
        return float(np.dot(w[perm], np.maximum(completion - d[perm], 0.0)))

    return energy


def auto_temperatures(energy, perm, rng, descent_steps=500, samples=512, scale=(0.1, 0.003)):
    """The same automatic range as sajax: greedy descent, then sample moves from there."""
    e = energy(perm)
    for _ in range(descent_steps):
        q = propose(perm, rng)
        eq = energy(q)
        if eq <= e:
            perm, e = q, eq
    deltas = np.array([energy(propose(perm, rng)) - e for _ in range(samples)])
    t0, t1 = auto_range(deltas, *scale)
    return float(t0), float(t1)


def baseline_sa(
    p,
    w,
    d,
    *,
    steps: int,
    seed: int = 0,
    t_start: float | None = None,
    t_end: float | None = None,
    time_budget_s: float | None = None,
    record_every: int = 1000,
):
    """Anneal one chain for ``steps`` steps (or until ``time_budget_s``).

    Returns ``(best_perm, best_energy, trace)`` with ``trace`` a list of
    ``(elapsed_s, steps_done, best_energy)`` recorded every ``record_every`` steps and at every
    new best.
    """
    rng = random.Random(seed)
    energy = make_energy(p, w, d)
    n = len(p)
    start = time.perf_counter()
    perm = np.array(rng.sample(range(n), n))
    if t_start is None or t_end is None:
        t_start, t_end = auto_temperatures(energy, perm, rng)
    e = energy(perm)
    best_perm, best = perm, e
    trace = [(time.perf_counter() - start, 0, best)]
    ratio = t_end / t_start
    last = max(steps - 1, 1)
    for s in range(steps):
        if time_budget_s is not None:
            frac = (time.perf_counter() - start) / time_budget_s
            if frac >= 1.0:
                break
            temperature = t_start * ratio ** max(s / last, frac)
        else:
            temperature = t_start * ratio ** (s / last)
        q = propose(perm, rng)
        eq = energy(q)
        delta = eq - e
        if delta <= 0 or rng.random() < math.exp(-delta / temperature):
            perm, e = q, eq
            if e < best:
                best_perm, best = perm, e
                trace.append((time.perf_counter() - start, s + 1, best))
        if (s + 1) % record_every == 0:
            trace.append((time.perf_counter() - start, s + 1, best))
    trace.append((time.perf_counter() - start, s + 1, best))
    return best_perm, best, trace
