"""Seed orders of the planner (step 1 of ``sajax.planner``): heuristic orders
(``seed_orders``), blends of shortest-first with EDF / least slack (``blend_orders``), the
bound's relaxation, Moore-Hodgson, push-back and refill (``build_seeds``), and the chains'
distinct start orders (``chain_starts``).

    names, orders, energies = build_seeds(cp, n_real, model, caps, exact, exact_data, config)
"""

from __future__ import annotations

import time

import numpy as np

from sajax.engine_model import EngineModel
from sajax.planner.energy import cap_met_fn, predicted_met, score_orders, with_cap
from sajax.planner.prepare import alone_time_ms
from sajax.planner.search import search_energy
from sajax.problem import Problem
from sajax.triage import accepted_count, moore_hodgson, push_back, refill, relaxed_order


def seed_orders(problem: Problem, model: EngineModel, names) -> dict[str, np.ndarray]:
    """Heuristic orders of the real rows (positions < n_real), padding rows kept at the tail."""
    from sajax import heuristics

    n_real = int(np.sum(problem.mask))
    size = len(problem.mask)
    out = {}
    for name in names:
        fn = getattr(heuristics, name, None) or getattr(heuristics, f"{name}_order", None)
        if fn is None:
            raise ValueError(f"unknown seed heuristic {name!r} (not in sajax.heuristics)")
        try:
            order = np.asarray(fn(problem, model))
        except TypeError:
            order = np.asarray(fn(problem))
        order = order[order < n_real]
        out[name] = np.concatenate([order, np.arange(n_real, size)]).astype(np.int32)
    return out


def blend_orders(cp: Problem, model: EngineModel, alphas=(0.25, 0.5, 0.75)) -> dict:
    """Orders by ``alpha * rank(urgency) + (1 - alpha) * rank(alone time)``.

    Urgency is the deadline (EDF's key) or the slack (least slack's); ``alpha = 0`` is
    shortest-first and ``alpha = 1`` the deadline heuristic. Ranks are normalised to [0, 1].
    """
    from sajax import heuristics

    live = np.asarray(cp.mask)
    n_real = int(live.sum())
    t = heuristics.alone_time(cp, model)
    alone = np.asarray(t.e2e_ms, np.float64)
    dl = np.asarray(heuristics.deadline(cp), np.float64)
    slack = np.minimum(
        np.asarray(cp.slo_e2e_ms, np.float64) - alone,
        np.asarray(cp.slo_ttft_ms, np.float64) - np.asarray(t.ttft_ms, np.float64),
    )

    def rank(x):
        x = np.where(np.isnan(x), np.inf, x)[:n_real]
        return np.argsort(np.argsort(x, kind="stable"), kind="stable") / max(n_real - 1, 1)

    out = {}
    for name, urgency in (("edf", dl), ("slack", slack)):
        for alpha in alphas:
            key = alpha * rank(urgency) + (1 - alpha) * rank(alone)
            order = np.argsort(key, kind="stable")
            out[f"blend_{name}_{alpha:g}"] = np.concatenate(
                [order, np.arange(n_real, len(live))]
            ).astype(np.int32)
    return out


def build_seeds(
    cp, n_real, model, caps, exact, exact_data, config, mh_top=3, refill_until=None, relaxed_top=1
):
    """Seed orders and their exact energies at every cap.

    Heuristics (``config.seeds``), blends of shortest-first with EDF / least slack
    (``blend_orders``), the relaxation's orders (``relaxed_order``), then Moore-Hodgson and
    ``push_back`` (``sajax.triage``) over the ``mh_top`` best heuristics / blends and the
    ``relaxed_top`` best relaxation orders at each one's best cap, then ``refill`` of the best
    Moore-Hodgson and the best push-back order (if ``refill_until``). Returns (names, orders
    (k, N) int32, energies (caps, k)).
    """
    from sajax import heuristics

    seeds = seed_orders(cp, model, config.seeds)
    if config.blends:
        seeds.update(blend_orders(cp, model))
    for share in sorted({min(int(s), int(np.asarray(model.slots))) for s in config.relaxed_shares}):
        seeds[f"relaxed_{share}"] = relaxed_order(cp, model, share)
    names = list(seeds)
    orders = np.stack([seeds[k] for k in names])
    energies = score_orders(exact, orders, exact_data, caps)
    if config.triage_rounds <= 0 or mh_top <= 0:
        return names, orders, energies
    alone = alone_time_ms(cp, model)
    doomed = np.asarray(heuristics.hopeless(cp, model))
    per_round = max(16, n_real // 64)
    pb_round = max(4, n_real // 256)
    new_names, new_orders, kinds = [], [], []
    # Triage the best mh_top heuristic / blend seeds and the best relaxed_top relaxation seeds
    # (the relaxation's orders often score best and would crowd out the others).
    ranked = np.argsort(energies.min(axis=0), kind="stable")
    relaxed = [i for i in ranked if names[i].startswith("relaxed_")]
    classic = [i for i in ranked if not names[i].startswith("relaxed_")]
    for si in classic[:mh_top] + relaxed[:relaxed_top]:
        cap = caps[int(np.argmin(energies[:, si]))]
        met_fn = cap_met_fn(cp, model, cap, exact)
        new_names.append(f"mh_{names[si]}@{cap}")
        new_orders.append(
            moore_hodgson(orders[si], met_fn, alone, n_real, hopeless=doomed, per_round=per_round)
        )
        new_names.append(f"pb_{names[si]}@{cap}")
        new_orders.append(push_back(orders[si], met_fn, alone, n_real, per_round=pb_round))
        kinds += ["mh", "pb"]
    new_orders = np.stack(new_orders)
    new_e = score_orders(exact, new_orders, exact_data, caps)
    if refill_until is not None:
        # Greedy re-insertion of the rejected requests of the best Moore-Hodgson and the best
        # push-back order (each at its best cap; they often win at different caps), sharing the
        # time left until ``refill_until``.
        best = new_e.min(axis=0)
        picks = [
            int(np.argmin(np.where(np.array(kinds) == kind, best, np.inf))) for kind in ("mh", "pb")
        ]
        for i, k in enumerate(picks):
            t0 = time.perf_counter()
            share = (refill_until - t0) / (len(picks) - i)
            if share <= 0:
                break
            ci = int(np.argmin(new_e[:, k]))
            base, cap_model = new_orders[k], with_cap(model, caps[ci])
            met = predicted_met(base, cp, cap_model, exact)
            data_cap = exact_data._replace(model=cap_model)
            fast = search_energy(exact, cp, model, base)

            def batch_energy(o, fast=fast, data_cap=data_cap):
                return score_orders(fast, o, data_cap)[0]

            n_front = accepted_count(base, met, n_real)
            refilled, _ = refill(base, n_front, n_real, batch_energy, deadline=t0 + share)
            new_names.append(f"refill_{new_names[k]}")
            new_orders = np.concatenate([new_orders, refilled[None]])
            refilled_e = score_orders(exact, refilled[None], exact_data, caps)
            new_e = np.concatenate([new_e, refilled_e], 1)
    return (
        names + new_names,
        np.concatenate([orders, new_orders]),
        np.concatenate([energies, new_e], axis=1),
    )


def chain_starts(orders: np.ndarray, energies: np.ndarray, chains: int) -> np.ndarray:
    """Start orders for ``chains`` chains: the distinct seed orders best-first, then again from
    the best (several seeds often coincide; distinct starts keep the chains apart)."""
    best_first = np.argsort(energies, kind="stable")
    _, first = np.unique(orders[best_first], axis=0, return_index=True)
    distinct = best_first[np.sort(first)]
    return orders[np.resize(distinct, min(chains, len(orders)))]
