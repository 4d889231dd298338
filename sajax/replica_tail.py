"""Makespan polish of a multi-replica plan: the predicted misses are what is left to move.

Under the attainment objective a request that misses its SLO scores the same whenever it
finishes, so the misses can be moved to even out the replicas' ends. Two steps, each kept only
if the predicted weighted hits do not drop and the makespan shrinks (every candidate scored
exactly: the fast model per replica, ``replicas.predict``):

1. ``rebalance_misses`` (across replicas): every replica keeps its hits in their order and the
   first wave (its cap) of misses after them; the other misses of all replicas are pooled and
   dealt again longest first (LPT), each to the replica whose load is least, a replica's load
   being the summed work of what it keeps and of the misses it has taken so far (``work_ms``:
   work in that replica's own time, so a faster replica takes more). Then, for a few rounds,
   the last-finishing request of the replica that ends last moves into the tail of the replica
   that ends first (among its misses, longest first), if it is a miss and the move shortens
   the job.
2. ``tail_longest_first`` (per replica): its hits keep their order and its misses follow them,
   longest first, so that the last wave is short requests, not a long one running alone.

    out = rebalance_misses(orders, caps, first, finish, problem, models, work)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sajax.metrics import problem_metrics
from sajax.problem import Problem


def _np(problem: Problem) -> Problem:
    return Problem(*(np.asarray(x) for x in problem))


def _met(first, finish, p: Problem) -> np.ndarray:
    m = problem_metrics(first, finish, p)
    return np.asarray(m.met, bool) & np.asarray(m.has_slo, bool) & np.isfinite(finish)


def _predict(orders, problem, models, caps):
    from sajax.replicas import predict  # replicas imports this module

    return predict(orders, problem, models, caps)


def rebalance_misses(orders, caps, first, finish, problem, models, work, rounds: int = 0):
    """Step 1 (module doc). ``work`` is (N, R); ``rounds`` of single moves after the LPT deal
    (0: 4 R; they stop at the first that does not pay). Returns (orders, first, finish, info)."""
    p = _np(problem)
    w = np.asarray(p.weight, np.float64)
    r = len(orders)
    met = _met(first, finish, p)
    hits_before = float(np.sum(w * met))
    span_before = float(np.nanmax(finish))
    info: dict[str, Any] = {"makespan_before_ms": span_before, "kept": False, "moves": 0}
    if r < 2:
        return orders, first, finish, info | {"makespan_after_ms": span_before}
    # each replica keeps its hits and the first wave of misses after them (the planner chose
    # those to run beside its last hits: long ones there slow those down, and hits are lost)
    heads, pool = [], []
    for j, o in enumerate(orders):
        o = np.asarray(o, np.int64)
        miss = o[~met[o]]
        heads.append(np.concatenate([o[met[o]], miss[: caps[j]]]))
        pool.append(miss[caps[j] :])
    misses = np.concatenate(pool)
    load = np.array([work[h, j].sum() for j, h in enumerate(heads)])
    dealt: list[list[int]] = [[] for _ in range(r)]
    for i in misses[np.argsort(-work[misses].mean(axis=1), kind="stable")]:
        j = int(np.argmin(load + work[i]))
        dealt[j].append(int(i))
        load[j] += work[i, j]
    cand = [np.concatenate([h, np.asarray(d, np.int64)]) for h, d in zip(heads, dealt, strict=True)]
    f1, e1 = _predict(cand, problem, models, caps)
    if np.sum(w * _met(f1, e1, p)) >= hits_before and np.nanmax(e1) < span_before:
        orders, first, finish = cand, f1, e1
        info["kept"] = True
    for _ in range(rounds or 4 * r):
        moved = _move_last(orders, caps, first, finish, problem, models, work, p, w)
        if moved is None:
            break
        orders, first, finish = moved
        info["moves"] += 1
    return orders, first, finish, info | {"makespan_after_ms": float(np.nanmax(finish))}


def _move_last(orders, caps, first, finish, problem, models, work, p, w):
    """One move (step 1's rounds): the last request of the replica that ends last to the
    tail of the one that ends first (among its misses, longest first); None if it does not pay."""
    ends = np.array([np.max(finish[o]) if len(o) else 0.0 for o in orders])
    late, early = int(np.argmax(ends)), int(np.argmin(ends))
    src = np.asarray(orders[late], np.int64)
    last = int(src[np.argmax(finish[src])])
    met = _met(first, finish, p)
    if late == early or met[last]:
        return None
    dst = np.asarray(orders[early], np.int64)
    tail = dst[~met[dst]]
    at = len(dst) - len(tail) + int(np.sum(work[tail, early] >= work[last, early]))
    pair = [src[src != last], np.insert(dst, at, last)]
    sub = [models[late], models[early]]
    f1, e1 = _predict(pair, problem, sub, [caps[late], caps[early]])
    rows = np.concatenate([src, dst])
    if np.sum(w[rows] * _met(f1, e1, p)[rows]) < np.sum(w[rows] * met[rows]):
        return None
    if max(np.max(e1[pair[0]]), np.max(e1[pair[1]])) >= ends[late]:
        return None
    orders = list(orders)
    orders[late], orders[early] = pair
    first, finish = first.copy(), finish.copy()
    first[rows], finish[rows] = f1[rows], e1[rows]
    return orders, first, finish


def tail_longest_first(orders, caps, first, finish, problem, models, work):
    """Step 2 (module doc), kept per replica only if its predicted weighted hits do not drop and
    its makespan shrinks. Misses finish later on average: it costs latency (and G), not hits."""
    p = _np(problem)
    met = np.asarray(problem_metrics(first, finish, p).met, bool)
    w = np.asarray(p.weight, np.float64)
    out = [np.asarray(o, np.int64) for o in orders]
    kept, span_before = 0, float(np.nanmax(finish))
    first, finish = first.copy(), finish.copy()
    for j, o in enumerate(orders):
        if len(o) < 2:
            continue
        hits, misses = o[met[o]], o[~met[o]]
        cand = np.concatenate([hits, misses[np.argsort(-work[misses, j], kind="stable")]])
        f1, e1 = _predict([cand], problem, [models[j]], [caps[j]])
        met1 = np.asarray(problem_metrics(f1, e1, p).met, bool)
        if np.sum(w[o] * met1[o]) >= np.sum(w[o] * met[o]) and np.nanmax(e1) < np.nanmax(finish[o]):
            out[j] = cand
            first[o], finish[o] = f1[o], e1[o]
            kept += 1
    span_after = float(np.nanmax(finish))
    info = {"replicas_changed": kept, "makespan_before_ms": span_before}
    return out, first, finish, info | {"makespan_after_ms": span_after}
