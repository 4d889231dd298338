"""Exact incremental scoring of moves under the fast engine model (``sajax.simulate``).

A move at positions ``lo < hi`` of an order leaves the admission scan's carry (the slot
buffer, the prefill pipeline) at every position before ``lo`` unchanged. The cache of an order
keeps the scan's rows (``_Sched``) and its carry at checkpoints every ``block`` positions; a
proposal re-runs the scan only from the checkpoint before ``lo``, writes the new rows over the
cached ones from there on, and evaluates the timings (``timings_from_schedule``, the same
O(N log N) pass as ``simulate``). The integer schedule is the one a full ``simulate`` computes,
bit for bit (the same scan body from the same carry); the times agree within float32 rounding.

The scan's cost is ``(N - block * (lo // block)) * max_slots`` instead of ``N * max_slots``.
Under ``vmap`` a loop with a per-element trip count runs as long as its longest element, so a
batch of proposals shares its start block (``score_from_block``): the search
(``sajax.plan_search``) draws one block per step for all chains and proposals, then moves whose
``lo`` lies in that block. (With the block drawn with probability proportional to the moves
whose ``lo`` lies in it, every proposal's marginal law is the one of a plain uniform move.)

    cache = init_cache(order, problem, model, s_max, kv, block)         # one order
    t = score_from_block(b, perms, caches, problem, models, s_max, kv, block)  # (P, N) Timings
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sajax.engine_model import EngineModel
from sajax.problem import Problem
from sajax.simulate import (
    Timings,
    _admit_fn,
    _by_position,
    _Carry,
    _engine_consts,
    _init_carry,
    _Sched,
    timings_from_schedule,
)

DEFAULT_BLOCK = 32


class SimCache(NamedTuple):
    """The fast model's state along one order (leading axes: batch dims if any)."""

    sched: _Sched  # (N,) rows of the admission scan, by position
    checkpoints: _Carry  # (B,) carries before positions 0, block, 2 block, ...
    final: _Carry  # the carry after the last position


def n_blocks(n: int, block: int) -> int:
    return -(-n // block)


def _padded_inputs(order, problem: Problem, block: int):
    """(positions, input, output, live) by position, padded to whole blocks (padding: dead)."""
    n = order.shape[0]
    inp, out, live = _by_position(order, problem)
    pad = n_blocks(n, block) * block - n
    positions = jnp.arange(n + pad, dtype=jnp.int32)
    ones = jnp.ones(pad, jnp.int32)
    return (
        positions,
        jnp.concatenate([inp, ones]),
        jnp.concatenate([out, ones]),
        jnp.concatenate([live, jnp.zeros(pad, bool)]),
    )


def _run_blocks(first_block, carry, sched, checkpoints, xs, admit_one, block: int):
    """Scan blocks ``first_block..`` from ``carry``, overwriting ``sched`` rows and checkpoints.

    ``xs`` are the padded per-position inputs; ``first_block`` may be traced (a while loop).
    """
    nb = checkpoints.admit.shape[0]

    def body(b, state):
        carry, sched, checkpoints = state
        checkpoints = jax.tree.map(
            lambda ck, c: jax.lax.dynamic_update_index_in_dim(ck, c, b, 0), checkpoints, carry
        )
        chunk = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, b * block, block), xs)
        carry, rows = jax.lax.scan(admit_one, carry, chunk)
        sched = jax.tree.map(
            lambda s, r: jax.lax.dynamic_update_slice_in_dim(s, r, b * block, 0), sched, rows
        )
        return carry, sched, checkpoints

    return jax.lax.fori_loop(first_block, nb, body, (carry, sched, checkpoints))


def init_cache(
    order: jax.Array, problem: Problem, model: EngineModel, s_max: int, kv: bool, block: int
) -> SimCache:
    """The cache of one order (a full scan, recording the checkpoints)."""
    order = jnp.asarray(order, jnp.int32)
    n = order.shape[0]
    nb = n_blocks(n, block)
    slots, budget, kv_cap = _engine_consts(problem, model, n)
    admit_one = _admit_fn(slots, budget, kv_cap, s_max, kv)
    carry = _init_carry(slots, s_max)
    checkpoints = jax.tree.map(lambda x: jnp.zeros((nb, *x.shape), x.dtype), carry)
    sched = _Sched(*(jnp.zeros(nb * block, jnp.int32) for _ in _Sched._fields))
    xs = _padded_inputs(order, problem, block)
    final, sched, checkpoints = _run_blocks(0, carry, sched, checkpoints, xs, admit_one, block)
    return SimCache(sched, checkpoints, final)


def resimulate(
    first_block, order, cache: SimCache, problem: Problem, model, s_max: int, kv: bool, block: int
) -> tuple[Timings, SimCache]:
    """Timings of ``order`` (and its cache), given the cache of an order that agrees with it on
    every position before ``first_block * block`` (one order; vmap for a batch that shares
    ``first_block``)."""
    order = jnp.asarray(order, jnp.int32)
    n = order.shape[0]
    slots, budget, kv_cap = _engine_consts(problem, model, n)
    admit_one = _admit_fn(slots, budget, kv_cap, s_max, kv)
    xs = _padded_inputs(order, problem, block)
    carry = jax.tree.map(lambda ck: ck[first_block], cache.checkpoints)
    final, sched, checkpoints = _run_blocks(
        first_block, carry, cache.sched, cache.checkpoints, xs, admit_one, block
    )
    new = SimCache(sched, checkpoints, final)
    inp, out, live = _by_position(order, problem)
    rows = _Sched(*(x[:n] for x in sched))
    t = timings_from_schedule(order, rows, final, inp, out, live, slots > s_max, model)
    return t, new


def score_from_block(
    first_block,
    orders,
    caches: SimCache,
    problem: Problem,
    models: EngineModel,
    s_max: int,
    kv: bool,
    block: int,
) -> tuple[Timings, SimCache]:
    """``resimulate`` of a batch ((P, N) orders, (P, ...) caches and models) sharing
    ``first_block`` (a traced scalar): the loop runs ``n_blocks - first_block`` blocks."""

    def one(order, cache, model):
        return resimulate(first_block, order, cache, problem, model, s_max, kv, block)

    return jax.vmap(one)(orders, caches, models)
