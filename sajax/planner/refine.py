"""Refinement of the annealed plan (the last stages of ``sajax.planner``): the latency polish
(``polish``, ``sajax.triage.pull_forward``) and the hit-set descent (``descend``,
``sajax.triage.hit_set_descent``), each scored exactly and kept only if it scores better.

    polished = polish(order, cap, cp, n_real, model, exact, exact_data, config, started)
"""

from __future__ import annotations

import jax
import numpy as np

from sajax.planner.config import DESCENT_STREAM, _last_stage_deadline
from sajax.planner.energy import cap_met_fn, score_orders, with_cap
from sajax.planner.prepare import alone_time_ms
from sajax.triage import hit_set_descent, pull_forward


def descend(order, energy, cap, cp, n_real, model, exact, exact_data, config, key, started):
    """The hit-set descent (``sajax.triage.hit_set_descent``) of ``order`` (exact ``energy``) at
    ``cap``, every neighbour scored exactly, until the budget's final reserve (re-scoring and the
    last simulation), or without a budget for ``config.descent_rounds`` rounds. Returns (order,
    its energy, improvements)."""
    data_cap = exact_data._replace(model=with_cap(model, cap))
    until = _last_stage_deadline(config, started)
    rounds = config.descent_rounds if until is None else None
    # a stream of its own (fold_in(key, 1) is the annealer's key: split(key)[1])
    seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, DESCENT_STREAM))).ravel()
    new_order, energy, _, improved = hit_set_descent(
        order,
        cap_met_fn(cp, model, cap, exact),
        lambda orders: score_orders(exact, orders, data_cap)[0],
        n_real,
        np.random.default_rng(seed),
        batch=config.descent_batch,
        rounds=rounds,
        deadline=until,
        energy=energy,
    )
    return new_order, energy, improved


def polish(order, cap, cp, n_real, model, exact, exact_data, config, started):
    """The latency polish (``sajax.triage.pull_forward``) of ``order`` at ``cap``: its rounds'
    orders scored exactly; returns (best order, its energy), or None (off or no time left)."""
    if config.polish_rounds <= 0:
        return None
    rounds = pull_forward(
        order,
        cap_met_fn(cp, model, cap, exact),
        alone_time_ms(cp, model),
        n_real,
        rounds=config.polish_rounds,
        deadline=_last_stage_deadline(config, started),
    )
    if not rounds:
        return None
    energies = score_orders(exact, np.stack(rounds), exact_data, [cap])[0]
    k = int(np.argmin(energies))
    return rounds[k], float(energies[k])
