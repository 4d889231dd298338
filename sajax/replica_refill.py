"""Greedy re-insertion across replicas: another replica's predicted misses into a replica's hits.

The single-engine planner re-inserts a replica's own rejected requests (``sajax.triage.refill``);
over R replicas each replica can also take the others' misses. A replica's plan serves its
predicted hits first (push-back and Moore-Hodgson seeds, the planner's hit-set moves), so its
"front" is the prefix of its order that meets its SLOs. ``refill_across`` visits the replicas in
turn; each is offered a batch of the other replicas' misses, cheapest first (``work``), that
could still meet their SLO when started where the front ends (deadline after the front's last
first token); each is tried at the end of the front, scored exactly (the fast model,
``replicas.predict``), and the one that adds the most weighted hits, if any, moves there from
its replica (where it missed: removing it loses no hit there; that replica is re-scored too).
Until ``deadline`` (``time.perf_counter()``) or no candidate is left.

    orders, first, finish, info = refill_across(orders, caps, first, finish, problem, models,
                                                work, deadline=time.perf_counter() + 10.0)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sajax.metrics import problem_metrics
from sajax.problem import Problem


def _met(first, finish, p: Problem) -> np.ndarray:
    m = problem_metrics(first, finish, p)
    return np.asarray(m.met, bool) & np.asarray(m.has_slo, bool) & np.isfinite(finish)


def refill_across(orders, caps, first, finish, problem, models, work, deadline, batch: int = 8):
    """The module doc's re-insertion; ``work`` (N, R). Returns (orders, first, finish, info)."""
    from sajax.replicas import predict  # replicas imports this module

    p = Problem(*(np.asarray(x) for x in problem))
    w = np.asarray(p.weight, np.float64)
    bound = np.where(np.isfinite(p.slo_e2e_ms), p.slo_e2e_ms, p.slo_ttft_ms).astype(np.float64)
    orders = [np.asarray(o, np.int64) for o in orders]
    first, finish = first.copy(), finish.copy()
    r = len(orders)
    home = np.full(len(w), -1)
    for j, o in enumerate(orders):
        home[o] = j
    met = _met(first, finish, p)
    tried = [set() for _ in range(r)]
    info: dict[str, Any] = {"tried": 0, "moved": 0, "hits_before": float(np.sum(w * met))}
    idle = 0
    t = 0
    while idle < r and time.perf_counter() < deadline:
        o = orders[t]
        front = int(np.argmin(met[o])) if not met[o].all() else len(o)
        pool = np.flatnonzero(~met & (home >= 0) & (home != t))
        pool = pool[[i not in tried[t] for i in pool]]
        cands = pool[np.argsort(work[pool, t], kind="stable")[:batch]]
        tried[t].update(int(i) for i in cands)
        gains = []
        for c in cands:
            at = int(np.searchsorted(np.maximum.accumulate(bound[o[:front]]), bound[c], "right"))
            trial = np.insert(o, at, c)
            f1, e1 = predict([trial], problem, [models[t]], [caps[t]])
            gains.append((float(np.sum(w[trial] * _met(f1, e1, p)[trial])), trial, f1, e1))
        info["tried"] += len(cands)
        idle = idle + 1 if len(cands) == 0 else 0  # ends when no replica has candidates
        best = max(gains, key=lambda g: g[0], default=None)
        if best is not None and best[0] > float(np.sum(w[o] * met[o])):
            _, trial, f1, e1 = best
            c = int(np.setdiff1d(trial, o)[0])
            s = int(home[c])
            orders[t], orders[s] = trial, orders[s][orders[s] != c]
            first[trial], finish[trial] = f1[trial], e1[trial]
            f2, e2 = predict([orders[s]], problem, [models[s]], [caps[s]])
            first[orders[s]], finish[orders[s]] = f2[orders[s]], e2[orders[s]]
            home[c] = t
            met = _met(first, finish, p)
            info["moved"] += 1
        t = (t + 1) % r
    info["hits_after"] = float(np.sum(w * met))
    return orders, first, finish, info
