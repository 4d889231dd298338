"""Seed orders that push hopeless requests to the back.

When the job cannot meet every SLO, a good order serves a large *feasible* set first and runs
everything else afterwards, shortest first (they miss anyway; short ones first keep the summed
latency -- G's denominator -- low). Two constructions over a priority order ``pi`` (EDF, least
slack, ...), both driven by a ``met_fn(order) -> (N,) bool`` (the fast model's prediction):

``triage`` (one shot): the requests predicted to miss under ``pi`` move to the back.

``moore_hodgson`` (Moore & Hodgson 1968, the optimal rule for the number of late jobs on one
machine, applied to the batch engine): keep ``pi`` for the accepted requests, simulate, and at
the first predicted miss at position ``p`` reject the *largest* accepted request among positions
``<= p`` (size: time alone on an idle engine) -- it is the one whose removal helps most the
requests behind it. Rejected requests go to the back, shortest first. Up to ``per_round``
misses are handled per simulation (each rejects the largest request before it), so a job of N
requests needs about ``rejections / per_round`` simulations. Requests that miss even alone
(``hopeless``) are rejected up front.

    order = moore_hodgson(edf_order, met_fn, alone_ms, n_real, hopeless=mask)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MetFn = Callable[[np.ndarray], np.ndarray]


def _assemble(priority: np.ndarray, rejected: np.ndarray, alone_ms, n_real: int) -> np.ndarray:
    head = priority[:n_real]
    keep = head[~rejected[head]]
    back = head[rejected[head]]
    back = back[np.argsort(alone_ms[back], kind="stable")]
    return np.concatenate([keep, back, priority[n_real:]]).astype(np.int32)


def triage(order: np.ndarray, met: np.ndarray, alone_ms: np.ndarray, n_real: int) -> np.ndarray:
    """Predicted misses to the back (shortest alone-time first); the met keep their order."""
    return _assemble(np.asarray(order), ~np.asarray(met, bool), np.asarray(alone_ms), n_real)


def moore_hodgson(
    priority: np.ndarray,
    met_fn: MetFn,
    alone_ms: np.ndarray,
    n_real: int,
    *,
    hopeless: np.ndarray | None = None,
    per_round: int = 16,
    max_rounds: int = 1_000,
) -> np.ndarray:
    """The Moore-Hodgson order over ``priority`` (module doc); padding stays at the tail."""
    priority = np.asarray(priority)
    alone_ms = np.asarray(alone_ms, np.float64)
    rejected = np.zeros(len(priority), bool)
    if hopeless is not None:
        rejected |= np.asarray(hopeless, bool)
    order = _assemble(priority, rejected, alone_ms, n_real)
    for _ in range(max_rounds):
        met = np.asarray(met_fn(order), bool)
        acc = order[: n_real - int(rejected[priority[:n_real]].sum())]
        miss_pos = np.flatnonzero(~met[acc])
        if len(miss_pos) == 0:
            break
        size = alone_ms[acc].copy()
        # Largest-so-far index along the accepted prefix, recomputed as picks are removed.
        for p in miss_pos[:per_round]:
            if np.all(np.isinf(size[: p + 1])):
                continue
            pick = int(np.argmax(size[: p + 1]))
            rejected[acc[pick]] = True
            size[pick] = -np.inf
        order = _assemble(priority, rejected, alone_ms, n_real)
    return order


def accepted_count(order: np.ndarray, met: np.ndarray, n_real: int) -> int:
    """Length of the longest prefix of ``order`` whose requests all meet their SLO."""
    miss = np.flatnonzero(~np.asarray(met, bool)[np.asarray(order)[:n_real]])
    return int(miss[0]) if len(miss) else n_real


def refill(
    order: np.ndarray,
    n_front: int,
    n_real: int,
    energy_fn: Callable[[np.ndarray], np.ndarray],
    batch: int = 8,
    deadline: float | None = None,
) -> tuple[np.ndarray, float]:
    """Greedy re-insertion: rejected requests (positions ``n_front..n_real-1``) are tried, in
    their order, at the end of the front; per batch of ``batch`` candidates the one that lowers
    the energy most is kept. ``energy_fn(orders (k, N)) -> (k,)``. Returns (order, energy).
    """
    import time

    order = np.asarray(order).copy()
    energy = float(energy_fn(order[None])[0])
    front, scan = n_front, n_front  # end of the front; next candidate position
    while scan < n_real:
        if deadline is not None and time.perf_counter() > deadline:
            break
        cands = np.arange(scan, min(scan + batch, n_real))
        trials = []
        for c in cands:
            t = order.copy()
            t[front + 1 : c + 1] = order[front:c]
            t[front] = order[c]
            trials.append(t)
        e = np.asarray(energy_fn(np.stack(trials)))
        k = int(np.argmin(e))
        if e[k] < energy:
            order, energy = trials[k], float(e[k])
            front += 1
            scan += 1  # the candidates before the kept one moved back by one: retry them
        else:
            scan += len(cands)
    return order, energy
