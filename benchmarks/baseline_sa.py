"""The paper-style reference: plain single-chain simulated annealing in NumPy/Python.

Same moves as sajax (swap, insert, segment reversal; same default mix), same energy (a full O(n)
recompute of the total weighted tardiness per proposal, in NumPy), same Metropolis rule and
geometric cooling, and the same automatic temperature range (greedy descent, then a neighbourhood
sample, ``sajax.schedules.auto_range``). One proposal per step, one chain, a Python loop.

``delta=True`` gives a stronger baseline: the same moves and rule, but the energy change of a
move is computed in NumPy over the segment it permutes only (cached completion times and costs,
O(hi - lo) instead of O(n); sajax's move-delta path, ``sajax.incremental``, instead scores a
full-range move in one vectorised pass from a cache).

    from baseline_sa import baseline_sa
    best_perm, best_energy, trace = baseline_sa(p, w, d, steps=200_000, seed=0)
    best_perm, best_energy, trace = baseline_sa(p, w, d, steps=200_000, seed=0, delta=True)
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
    return propose_segment(perm, rng, mix)[0]


def propose_segment(perm: np.ndarray, rng: random.Random, mix=MIX) -> tuple[np.ndarray, int, int]:
    """``(moved copy, lo, hi)``: the move only permutes positions lo..hi."""
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
        q[min(i, j) : max(i, j) + 1] = perm[min(i, j) : max(i, j) + 1][::-1]
    return q, min(i, j), max(i, j)


def make_energy(p, w, d):
    p, w, d = (np.asarray(x, np.float64) for x in (p, w, d))

    def energy(perm: np.ndarray) -> float:
        completion = np.cumsum(p[perm])
        return float(np.dot(w[perm], np.maximum(completion - d[perm], 0.0)))

    return energy


class SegmentDelta:
    """Energy changes over the permuted segment only, from cached completion times and costs."""

    def __init__(self, p, w, d, perm: np.ndarray):
        self.p, self.w, self.d = (np.asarray(x, np.float64) for x in (p, w, d))
        self.reset(perm)

    def reset(self, perm: np.ndarray) -> None:
        self.completion = np.cumsum(self.p[perm])
        self.cost = self.w[perm] * np.maximum(self.completion - self.d[perm], 0.0)

    def delta(self, q: np.ndarray, lo: int, hi: int) -> float:
        seg = q[lo : hi + 1]
        before = self.completion[lo - 1] if lo > 0 else 0.0
        self._completion = before + np.cumsum(self.p[seg])
        self._cost = self.w[seg] * np.maximum(self._completion - self.d[seg], 0.0)
        return float(self._cost.sum() - self.cost[lo : hi + 1].sum())

    def accept(self, lo: int, hi: int) -> None:
        """Commit the last ``delta``'s segment."""
        self.completion[lo : hi + 1] = self._completion
        self.cost[lo : hi + 1] = self._cost


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
    delta: bool = False,
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
    segments = SegmentDelta(p, w, d, perm) if delta else None
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
        q, lo, hi = propose_segment(perm, rng)
        if segments is None:
            eq = energy(q)
            change = eq - e
        else:
            change = segments.delta(q, lo, hi)
            eq = e + change
        if change <= 0 or rng.random() < math.exp(-change / temperature):
            perm, e = q, eq
            if segments is not None:
                segments.accept(lo, hi)
            if e < best:
                best_perm, best = perm, e
                trace.append((time.perf_counter() - start, s + 1, best))
        if (s + 1) % record_every == 0:
            trace.append((time.perf_counter() - start, s + 1, best))
    trace.append((time.perf_counter() - start, s + 1, best))
    if segments is not None:  # the accumulated energy of the best order, recomputed exactly
        best = energy(best_perm)
    return best_perm, best, trace
