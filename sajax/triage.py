"""Seed orders that push hopeless requests to the back.

When the job cannot meet every SLO, a good order serves a large *feasible* set first and runs
everything else afterwards, shortest first (they miss anyway; short ones first keep the summed
latency -- G's denominator -- low). Constructions over a priority order ``pi`` (EDF, least
slack, ...), each driven by a ``met_fn(order) -> (N,) bool`` (the fast model's prediction):

``triage`` (one shot): the requests predicted to miss under ``pi`` move to the back;
``push_back`` repeats it, a few misses at a time, until no kept miss is ahead of a hit;
``pull_forward`` goes the other way for a finished plan: shortest-first for everyone, with the
plan's hits pulled forward only as far as they need (the latency polish);
``hit_set_descent`` improves a finished plan by moves that change which requests are on time.

``moore_hodgson`` (Moore & Hodgson 1968, the optimal rule for the number of late jobs on one
machine, applied to the batch engine): keep ``pi`` for the accepted requests, simulate, and at
the first predicted miss at position ``p`` reject the *largest* accepted request among positions
``<= p`` (size: time alone on an idle engine) -- it is the one whose removal helps most the
requests behind it. Rejected requests go to the back, shortest first. Up to ``per_round``
misses are handled per simulation (each rejects the largest request before it), so a job of N
requests needs about ``rejections / per_round`` simulations. Requests that miss even alone
(``hopeless``) are rejected up front.

    order = moore_hodgson(edf_order, met_fn, alone_ms, n_real, hopeless=mask)

``attainment_upper_bound`` bounds the (unweighted) attainment of *every* order and in-flight cap
from above by a one-machine relaxation solved exactly by Moore-Hodgson (see its docstring);
``relaxed_order`` turns that relaxation's solution into a seed order.
"""

from __future__ import annotations

import heapq
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


def push_back(
    priority: np.ndarray,
    met_fn: MetFn,
    alone_ms: np.ndarray,
    n_real: int,
    *,
    per_round: int = 4,
    max_rounds: int = 200,
) -> np.ndarray:
    """Iterated ``triage``: the first ``per_round`` predicted misses among the requests still
    kept (not yet moved back) that stand ahead of a predicted hit move to the back; re-simulate,
    repeat until no kept miss is ahead of a hit (each round moves at least one request, so it
    ends within ``n_real`` rounds, or ``max_rounds``).

    Unlike ``moore_hodgson`` it rejects the missing request itself, not the largest before it:
    the right move when misses come from waiting for a slot or behind a prefill burst (a
    request that already made its SLO frees nothing by leaving), which is how tight
    first-token SLOs fail. Padding stays at the tail; rejected rows go back shortest first.
    """
    priority = np.asarray(priority)
    alone_ms = np.asarray(alone_ms, np.float64)
    rejected = np.zeros(len(priority), bool)
    order = _assemble(priority, rejected, alone_ms, n_real)
    for _ in range(max_rounds):
        n_keep = n_real - int(rejected[priority[:n_real]].sum())
        met = np.asarray(met_fn(order), bool)[order[:n_real]]
        hits = np.flatnonzero(met)
        if len(hits) == 0:
            break
        # kept requests (positions < n_keep) that miss ahead of the last hit
        ahead = np.flatnonzero(~met[: min(hits[-1], n_keep)])[:per_round]
        if len(ahead) == 0:
            break
        rejected[order[ahead]] = True
        order = _assemble(priority, rejected, alone_ms, n_real)
    return order


def pull_forward(
    order: np.ndarray,
    met_fn: MetFn,
    alone_ms: np.ndarray,
    n_real: int,
    *,
    rounds: int = 40,
    first_step: float = 4.0,
    deadline: float | None = None,
) -> list[np.ndarray]:
    """Latency polish: shortest-first, except that the requests ``order`` gets on time are
    pulled forward only as far as they need to stay on time.

    Every real request is ranked by alone-time (shortest first, the order that minimises summed
    latency). The requests predicted to meet their SLO under ``order`` (the "hits") that miss
    under the current ranking move forward by a step that doubles each round they still miss;
    re-simulate, repeat until no such hit misses, ``rounds`` rounds, or ``deadline``
    (``time.perf_counter()``). Returns the order of every round (the first is plain
    shortest-first; none if the deadline has passed); the caller scores them and keeps the
    best. A hit that cannot be saved keeps moving forward (to the head, where it may delay
    others), so later rounds can be worse than earlier ones: hence all rounds are returned.
    ``order`` itself is not among them.
    """
    import time

    if deadline is not None and time.perf_counter() > deadline:
        return []
    order = np.asarray(order)
    alone_ms = np.asarray(alone_ms, np.float64)
    head = order[:n_real]
    hit = np.zeros(len(order), bool)
    hit[head] = np.asarray(met_fn(order), bool)[head]
    key = np.empty(len(order))
    key[head[np.argsort(alone_ms[head], kind="stable")]] = np.arange(n_real)
    step = np.full(len(order), float(first_step))
    out = []
    for _ in range(rounds):
        if deadline is not None and time.perf_counter() > deadline:
            break
        cand = np.concatenate([head[np.argsort(key[head], kind="stable")], order[n_real:]])
        out.append(cand.astype(np.int32))
        late = hit & ~np.asarray(met_fn(cand), bool)
        if not late.any():
            break
        key[late] -= step[late]
        step[late] *= 2.0
    return out


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


def _hit_set_move(head: np.ndarray, hit_pos: np.ndarray, miss_pos: np.ndarray, rng) -> np.ndarray:
    """One neighbour of ``head`` for ``hit_set_descent``."""
    last = int(hit_pos[-1]) if len(hit_pos) else -1
    src = int(rng.choice(miss_pos))
    dst = min(int(rng.integers(0, last + 2)), len(head) - 1)
    out = np.insert(np.delete(head, src), dst, head[src])
    if len(hit_pos) and rng.random() < 0.5:
        hit = head[int(rng.choice(hit_pos))]
        out = np.delete(out, np.flatnonzero(out == hit)[0])
        out = np.insert(out, min(last + 1, len(out)), hit)
    return out


def hit_set_descent(
    order: np.ndarray,
    met_fn: MetFn,
    energy_fn: Callable[[np.ndarray], np.ndarray],
    n_real: int,
    rng: np.random.Generator,
    *,
    batch: int = 32,
    rounds: int | None = None,
    deadline: float | None = None,
    energy: float | None = None,
) -> tuple[np.ndarray, float, int, int]:
    """Best-of-``batch`` descent on which requests are on time.

    Each round draws ``batch`` neighbours of the current order: one predicted miss moves to a
    random position up to just behind the last predicted hit (mostly forward, into the hits),
    and half of the time one predicted hit moves to just behind the hits. These are the moves
    that change the set of hits (and where it sits); a uniformly drawn annealing move mostly
    shuffles the tail of misses, where it changes little. The neighbours are scored together
    (``energy_fn(orders (k, N)) -> (k,)``) and the best replaces the order if it lowers the
    energy. Stops after ``rounds`` rounds, when nothing misses, or before a round that, timed
    as the last one, would end past ``deadline`` (``time.perf_counter()``). Padding stays at the
    tail. ``energy``: the order's energy, if known (saves scoring it). Returns (order, energy,
    rounds run, improvements).
    """
    import time

    if rounds is None and deadline is None:
        raise ValueError("hit_set_descent needs rounds or a deadline")
    order = np.asarray(order).astype(np.int32)
    tail = order[n_real:]
    if energy is None:
        energy = float(energy_fn(order[None])[0])
    done = improved = 0
    last_round_s = 0.0
    while rounds is None or done < rounds:
        t0 = time.perf_counter()
        if deadline is not None and t0 + last_round_s > deadline:
            break
        head = order[:n_real]
        met = np.asarray(met_fn(order), bool)[head]
        hit_pos, miss_pos = np.flatnonzero(met), np.flatnonzero(~met)
        if len(miss_pos) == 0:
            break
        cands = np.stack(
            [
                np.concatenate([_hit_set_move(head, hit_pos, miss_pos, rng), tail])
                for _ in range(batch)
            ]
        ).astype(np.int32)
        e = np.asarray(energy_fn(cands))
        k = int(np.argmin(e))
        done += 1
        if e[k] < energy:
            order, energy, improved = cands[k], float(e[k]), improved + 1
        last_round_s = time.perf_counter() - t0
    return order, float(energy), done, improved


def on_time_set(work: np.ndarray, deadline: np.ndarray) -> np.ndarray:
    """Indices of a largest set of jobs one machine finishes by their deadlines, by deadline.

    ``1 || sum U_j`` solved exactly by Moore-Hodgson with a heap: jobs by deadline; when the
    running total passes the current deadline, drop the longest job accepted so far. ``work``
    and ``deadline`` are (n,) floats.
    """
    work = np.asarray(work, np.float64)
    deadline = np.asarray(deadline, np.float64)
    accepted: list[tuple[float, int]] = []  # max-heap of accepted (processing time, index)
    t = 0.0
    for i in np.argsort(deadline, kind="stable"):
        heapq.heappush(accepted, (-work[i], int(i)))
        t += work[i]
        if t > deadline[i]:
            t += heapq.heappop(accepted)[0]
    kept = np.array([i for _, i in accepted], np.int64)
    return kept[np.argsort(deadline[kept], kind="stable")]


def max_on_time(work: np.ndarray, deadline: np.ndarray) -> int:
    """The most jobs one machine finishes by their deadlines (``1 || sum U_j``, exact)."""
    return len(on_time_set(work, deadline))


def _relaxation(problem, model, share: float):
    """Work and deadline of each live request in the one-machine relaxation (see below).

    Returns (rows, work, deadline, has_slo, timed): ``rows`` the live row indices; the other
    arrays are over those rows. ``share``: how many sequences split an iteration's fixed cost.
    """
    a, b = float(np.asarray(model.a_ms)), float(np.asarray(model.b_ms))
    d = float(np.asarray(model.d_ms))  # per sampled row: every output token's, the first's
    rows = np.flatnonzero(np.asarray(problem.mask, bool))
    inp = np.asarray(problem.input_len, np.float64)[rows]
    out = np.asarray(problem.output_len, np.float64)[rows]
    e2e = np.asarray(problem.slo_e2e_ms, np.float64)[rows]
    ttft = np.asarray(problem.slo_ttft_ms, np.float64)[rows]
    tpot = np.asarray(problem.slo_tpot_ms, np.float64)[rows]
    has_e2e, has_ttft = np.isfinite(e2e), np.isfinite(ttft)
    has_slo = has_e2e | has_ttft | np.isfinite(tpot)
    work = np.where(
        has_e2e, b * (inp + out - 1) + d * out + a * out / share, b * inp + d + a / share
    )
    deadline = np.where(has_e2e, e2e, ttft)
    return rows, work, deadline, has_slo, has_e2e | has_ttft


def attainment_upper_bound(problem, model) -> float:
    """An upper bound on the unweighted SLO attainment of any order and in-flight cap.

    Every engine iteration costs ``a + b * forward_tokens + c * context >= a + b *
    forward_tokens`` and serves at most ``slots`` sequences, so charging ``a / slots`` to each
    sequence in it, request ``i`` needs at least::

        w_i = b * tokens_i + a * iterations_i / slots

    of engine time before its deadline ``D_i``: with an e2e SLO, ``tokens = in + out - 1`` and
    ``iterations = out`` before ``D_i = slo_e2e``; with only a TTFT SLO, the prompt (``tokens =
    in``, one iteration) before ``D_i = slo_ttft``; TPOT SLOs are dropped (relaxed). The requests
    meeting their SLOs in any schedule then fit one machine by their deadlines
    (``sum_{i met, D_i <= t} w_i <= t`` for all ``t``), and ``max_on_time`` is the largest such
    set. Requests without an SLO are not counted (as in ``sajax.metrics.attainment``);
    TPOT-only ones count as met. A relaxation: the bound need not be attainable.
    """
    _, work, deadline, has_slo, timed = _relaxation(problem, model, int(np.asarray(model.slots)))
    if not has_slo.any():
        return float("nan")
    met = max_on_time(work[timed], deadline[timed]) + int(np.sum(has_slo & ~timed))
    return met / int(has_slo.sum())


def relaxed_order(problem, model, share: float | None = None) -> np.ndarray:
    """A seed order from the relaxation of ``attainment_upper_bound``: its on-time set first,
    by deadline, then every other row shortest (alone time) first; padding rows at the tail.

    ``share`` (default ``slots``) is how many sequences split each iteration's fixed cost ``a``:
    the bound's optimistic full sharing at ``slots``; smaller values charge more per request
    and accept fewer (the relaxation ignores that a running request holds its slot, so at full
    sharing it accepts more first-token requests than the slots can admit in time).
    """
    from sajax.heuristics import alone_time

    share = float(np.asarray(model.slots)) if share is None else float(share)
    rows, work, deadline, _, timed = _relaxation(problem, model, share)
    front = rows[timed][on_time_set(work[timed], deadline[timed])]
    rejected = np.ones(len(problem.mask), bool)
    rejected[front] = False
    pad = np.flatnonzero(~np.asarray(problem.mask, bool))
    priority = np.concatenate([front, rows[rejected[rows]], pad])
    alone = np.asarray(alone_time(problem, model).e2e_ms, np.float64)
    return _assemble(priority, rejected, alone, len(rows))
