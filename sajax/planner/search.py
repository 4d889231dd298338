"""The annealing search of the planner (step 2 of ``sajax.planner``): the static simulation
settings (``sim_settings``: slot buffer, KV check), the energy the chains use
(``search_energy``: without the KV check when it does not bind) and the ``anneal_many`` call
within the time budget (``run_search``).

    result, steps, stop = run_search(energy, key, n, data, init, n_valid, config, started)
    search_stats(result)   # kicks, last improvement, acceptance: the PlanSummary fields
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from sajax.anneal import anneal_many
from sajax.engine_model import EngineModel
from sajax.moves import move_mix
from sajax.planner.config import BUDGET_STEPS, DEFAULT_STEPS, _finish_reserve
from sajax.planner.energy import PlanEnergy, _np_model, predict
from sajax.problem import Problem


def sim_settings(
    model: EngineModel, caps: list[int], n: int, problem: Problem | None = None
) -> tuple[int, bool]:
    """Static simulation settings: slot buffer (power of two >= every cap) and KV check.

    The KV check is off when it can never bind: no ``top`` requests together (``top`` = the
    largest cap) reserve more than ``kv_capacity`` tokens. It is then exactly redundant and
    skipping it makes the simulation several times faster.
    """
    top = max(1, min(max(caps), n))
    max_slots = min(1 << (top - 1).bit_length(), max(n, 1))
    kv_cap = int(np.asarray(model.kv_capacity))
    if kv_cap <= 0:
        return max_slots, False
    if problem is None:
        return max_slots, True
    out = np.asarray(problem.output_len).reshape(-1, np.shape(problem.mask)[-1]).max(axis=0)
    need = np.where(np.asarray(problem.mask), np.asarray(problem.input_len) + out, 0)
    worst = int(np.sum(np.sort(need)[::-1][:top]))
    return max_slots, worst > kv_cap


def run_search(
    energy, key, n, data, init, n_valid, config, started, n_valid_batch=None, leave_share=0.0
):
    """``anneal_many`` over the instances of ``data``, within what is left of the budget, less
    ``leave_share`` of it (for a later stage).

    Returns (AnnealResult, steps per chain run, stop reason). With a budget the driver stretches
    its cooling schedule over the remaining seconds (``sajax.anneal``'s ``time_budget_s``).
    """
    mix = move_mix(config.swap, config.insert, config.reverse)
    kwargs = dict(
        chains=config.chains,
        init_perms=init,
        n_valid=n_valid if n_valid_batch is None else n_valid_batch,
        moves=mix,
        chunk_size=config.chunk_size,
        warmup_chunks=0,
        temperature_range=(config.t_start, config.t_end),
        warmup_samples=16,
        restart_patience=None,
    )
    budget = None
    steps = DEFAULT_STEPS if config.steps is None else config.steps
    if config.time_budget_s is not None:
        budget = started + config.time_budget_s - time.perf_counter() - _finish_reserve(config)
        budget *= 1.0 - leave_share
        steps = BUDGET_STEPS if config.steps is None else config.steps
        if budget <= 0 and steps > 0:
            return None, 0, "time_budget"
    if steps <= 0:
        return None, 0, "no_search"
    res = anneal_many(energy, key, n, data, steps=steps, time_budget_s=budget, **kwargs)
    return res, int(res.steps), "time_budget" if res.stop_reason == "time_budget" else "steps"


def search_stats(result) -> dict:
    """The search's stall figures for ``PlanSummary``: kicks over all chains
    (``search_restarts``), the last step at which any chain's best improved
    (``search_last_improvement``, -1: never) and accepted / sequential steps over the run
    (``search_acceptance``, NaN without a search)."""
    if result is None:
        return dict(search_restarts=0, search_last_improvement=-1, search_acceptance=float("nan"))
    proposed = max(int(np.sum(result.proposed)), 1)
    return dict(
        search_restarts=int(np.sum(result.restarts)),
        search_last_improvement=int(np.max(result.last_improvement)),
        search_acceptance=float(np.sum(result.accepted)) / proposed,
    )


def search_energy(exact: PlanEnergy, cp: Problem, model: EngineModel, order) -> PlanEnergy:
    """The energy the chains use: ``exact``, or without the KV check when it does not bind.

    The KV check makes a simulation several times slower. If the best seed's timings are the
    same (within 0.1 %) without it, the chains search without it; every candidate is still
    re-scored with ``exact`` before a plan is chosen.
    """
    if not exact.kv:
        return exact
    fast = dataclasses.replace(exact, kv=False)
    m = _np_model(model)
    a = predict(order, cp, m, exact)[1]
    b = predict(order, cp, m, fast)[1]
    live = np.asarray(cp.mask)
    rel = np.max(np.abs(a[live] - b[live]) / np.maximum(a[live], 1.0))
    return fast if rel < 1e-3 else exact
