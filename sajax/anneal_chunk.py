"""The jitted programs of the annealing driver: seeds' states, one chunk of steps, the warm-up
sample and the replica exchange between chunks.

A chunk scans ``L`` steps of the one-chain kernel (``sajax.kernel`` or, for an
``IncrementalEnergy``, ``sajax.incremental``); the chain axis is added by one ``jax.vmap`` (a
second one over instances), so that a chunk is one call with no host round trip inside. With
``kicks`` the scan is split into segments of ``segment_length(L)`` steps, and after each segment
a chain whose best has not improved for ``patience`` steps is kicked (``sajax.stagnation``).
Without ``kicks`` the chunk is exactly the plain scan of steps.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sajax.incremental import IncrementalEnergy, delta_step_from_uniforms
from sajax.kernel import AnnealState, init, step_from_uniforms
from sajax.moves import draw_move
from sajax.stagnation import KICK_MOVES, kick, segment_length, stale_after


class ChunkOut(NamedTuple):
    """What one chunk returns; every field (B, C)."""

    state: AnnealState
    accepted: jax.Array  # int32, accepted moves in the chunk
    improved: jax.Array  # bool, the chain's best improved in the chunk
    sequential: jax.Array  # int32, sequential Metropolis steps the chunk stood for
    last_improved: jax.Array  # int32, index in the chunk of the last new best (-1: none)
    stale: jax.Array  # int32, steps since the chain's best last improved (kicks: since a kick)
    kicks: jax.Array  # int32, kicks so far (the input count plus this chunk's)


def _map_chains(fn, n_chain: int, n_inst: int, data_batched: bool, single: bool = False):
    """The one vmap over chains, plus the instance axis.

    ``fn(*chain_args, *instance_args, data)``: ``n_chain`` arguments with leaves (B, C, ...),
    ``n_inst`` with leaves (B, ...), then the data ((B, ...) leaves when ``data_batched``).
    ``single`` (one instance, one chain): no vmap at all, so that a ``lax.cond`` in the step
    stays a real branch (under vmap it becomes a select that runs both sides).
    """

    def split(args):
        return args[:n_chain], args[n_chain : n_chain + n_inst], args[-1]

    if single:

        def call(*args):
            chain, inst, d = split(args)
            chain = jax.tree.map(lambda x: x[0, 0], chain)
            inst = jax.tree.map(lambda x: x[0], inst)
            d = jax.tree.map(lambda x: x[0], d) if data_batched else d
            return jax.tree.map(lambda x: x[None, None], fn(*chain, *inst, d))

        return call
    per_instance = jax.vmap(fn, in_axes=(0,) * n_chain + (None,) * (n_inst + 1))
    outer = (0,) * (n_chain + n_inst) + (0 if data_batched else None,)
    return jax.vmap(per_instance, in_axes=outer)


@partial(jax.jit, static_argnames=("energy_fn", "data_batched"))
def init_states(perms, data, *, energy_fn, data_batched):
    def one(perm, d):
        return init(perm, energy_fn, d)

    return _map_chains(one, 1, 0, data_batched)(perms, data)


@partial(jax.jit, static_argnames=("energy_fn", "data_batched", "proposals", "select", "kicks"))
def run_chunk(
    key,
    state,
    temps,
    active,
    data,
    n_valid,
    probs,
    stale,
    kicks_done,
    patience,
    *,
    energy_fn,
    data_batched,
    proposals,
    select,
    kicks,
):
    """Scan ``L`` steps of every chain: temps (B, C, L), active (L,) bool, n_valid and patience
    (B,), stale and kicks_done (B, C). Returns a ``ChunkOut``."""
    b, c, length = temps.shape
    single = b == c == 1
    incremental = isinstance(energy_fn, IncrementalEnergy)
    seg = segment_length(length)

    def kicked_state(s, ku, origin, nv, d):
        perm = kick(ku, origin, nv, probs)
        energy = jnp.asarray(energy_fn(perm, d), jnp.float32)
        better = energy < s.best_energy  # False for NaN
        s = AnnealState(
            perm=perm,
            energy=energy,
            best_perm=jnp.where(better, perm, s.best_perm),
            best_energy=jnp.where(better, energy, s.best_energy),
        )
        return s, (energy_fn.init_cache(perm, d) if incremental else None), better

    def chain(s, u, t, st, kd, ku, nv, pat, inst_best, d):
        def advance(carry, x):
            s, cache = carry
            u_l, t_l, a_l = x
            if incremental:
                s, cache, info = delta_step_from_uniforms(
                    u_l, s, cache, t_l, d, inc=energy_fn, probs=probs, n_valid=nv, active=a_l,
                    select=select,
                )  # fmt: skip
                return (s, cache), (info.accepted, info.improved, info.sequential * a_l)
            new, info = step_from_uniforms(
                u_l, s, t_l, d, energy_fn=energy_fn, probs=probs, n_valid=nv, select=select
            )
            new = jax.tree.map(lambda x, y: jnp.where(a_l, x, y), new, s)
            return (new, cache), (info.accepted & a_l, info.improved & a_l, info.sequential * a_l)

        cache = energy_fn.init_cache(s.perm, d) if incremental else None
        idx = jnp.arange(length)
        if not kicks:
            (s, _), (acc, imp, seq) = jax.lax.scan(advance, (s, cache), (u, t, active))
        else:

            def segment(carry, x):
                s, cache, st, kd = carry
                u_s, t_s, a_s, ku_s = x
                (s, cache), (acc, imp, seq) = jax.lax.scan(advance, (s, cache), (u_s, t_s, a_s))
                st = stale_after(st, imp, a_s)
                fire = (st >= pat) & a_s[-1]
                # every other kick of a chain starts from its instance's best (c > 1)
                origin = jnp.where((c > 1) & (kd % 2 == 1), inst_best, s.best_perm)

                def fired(sc):
                    return kicked_state(sc[0], ku_s, origin, nv, d)

                s, cache, better = jax.lax.cond(
                    fire, fired, lambda sc: (*sc, jnp.bool_(False)), (s, cache)
                )
                imp = imp.at[-1].set(imp[-1] | better)
                return (s, cache, jnp.where(fire, 0, st), kd + fire), (acc, imp, seq)

            def by_segment(x):
                return x.reshape(length // seg, seg, *x.shape[1:])

            xs = (by_segment(u), by_segment(t), by_segment(active), ku)
            (s, _, st, kd), out = jax.lax.scan(segment, (s, cache, st, kd), xs)
            acc, imp, seq = (x.reshape(length) for x in out)
        if incremental:
            s = _resync(s, energy_fn, d)
        last = jnp.max(jnp.where(imp, idx, -1)).astype(jnp.int32)
        acc, seq = jnp.sum(acc, dtype=jnp.int32), jnp.sum(seq, dtype=jnp.int32)
        return ChunkOut(s, acc, jnp.any(imp), seq, last, st, kd)

    key_steps, key_kicks = key, jax.random.fold_in(key, 1)
    shape = (
        (b, c, length, 4) if proposals == 1 and not incremental else (b, c, length, proposals, 4)
    )
    u = jax.random.uniform(key_steps, shape)
    ku = jax.random.uniform(key_kicks, (b, c, length // seg, KICK_MOVES, 3))
    best_chain = jnp.argmin(state.best_energy, axis=1)  # (B,)
    inst_best = jnp.take_along_axis(state.best_perm, best_chain[:, None, None], axis=1)[:, 0]
    mapped = _map_chains(chain, 6, 3, data_batched, single)
    return mapped(state, u, temps, stale, kicks_done, ku, n_valid, patience, inst_best, data)


def _resync(state: AnnealState, inc: IncrementalEnergy, data: Any) -> AnnealState:
    """Recompute the cached energies with the full energy (bounds the rounding of deltas)."""
    energy = jnp.asarray(inc.energy(state.perm, data), jnp.float32)
    best = jnp.asarray(inc.energy(state.best_perm, data), jnp.float32)
    best = jnp.where(jnp.isnan(best), jnp.inf, best)
    current_is_best = energy < best  # possible only through rounding; keep "best <= current"
    return AnnealState(
        perm=state.perm,
        energy=energy,
        best_perm=jnp.where(current_is_best, state.perm, state.best_perm),
        best_energy=jnp.where(current_is_best, energy, best),
    )


@partial(jax.jit, static_argnames=("energy_fn", "data_batched"))
def neighbour_deltas(key, state, samples, data, n_valid, probs, *, energy_fn, data_batched):
    """Energy changes of ``samples`` (K,) random moves from each chain's state: (B, C, K)."""

    incremental = isinstance(energy_fn, IncrementalEnergy)

    def chain(s, u, nv, d):
        if incremental:
            cache = energy_fn.init_cache(s.perm, d)
            kind, i, j = jax.vmap(draw_move, in_axes=(0, None, None))(u[:, :3], nv, probs)
            delta = jax.vmap(energy_fn.move_delta, in_axes=(None, 0, 0, 0, None))
            return delta(cache, kind, i, j, d)

        def one(u_k):
            _, info = step_from_uniforms(
                u_k, s, 0.0, d, energy_fn=energy_fn, probs=probs, n_valid=nv
            )
            return info.delta

        return jax.vmap(one)(u)

    b, c = state.energy.shape
    u = jax.random.uniform(key, (b, c, samples.shape[0], 4))
    return _map_chains(chain, 2, 1, data_batched)(state, u, n_valid, data)


@jax.jit
def exchange_replicas(key, state, temps, do_exchange, parity):
    """Replica exchange between neighbouring rungs (pairs (k, k+1), k = parity mod 2)."""
    b, c = state.energy.shape
    idx = jnp.arange(c)
    up = (idx - parity) % 2 == 0
    partner = jnp.where(up, idx + 1, idx - 1)
    partner = jnp.where((partner < 0) | (partner >= c), idx, partner)
    u = jax.random.uniform(key, (b, c))
    u_pair = jnp.take_along_axis(u, jnp.broadcast_to(jnp.minimum(idx, partner), (b, c)), axis=1)
    e_self = jnp.where(jnp.isnan(state.energy), jnp.inf, state.energy)
    e_other = e_self[:, partner]
    t_other = temps[:, partner]
    log_ratio = (e_self - e_other) * (1.0 / temps - 1.0 / t_other)
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    swap = do_exchange & (partner != idx) & (jnp.log(u_pair) < log_ratio)
    perm = jnp.where(swap[..., None], state.perm[:, partner], state.perm)
    energy = jnp.where(swap, state.energy[:, partner], state.energy)
    return state._replace(perm=perm, energy=energy), swap
