"""Windowed incremental energies: O(L) Metropolis steps for energies with local move deltas.

Every move (swap, insert, reversal of positions i, j) only permutes the segment
``[min(i, j), max(i, j)]``. For an energy that is a sum of per-position terms depending on the
item and on a running prefix (weighted tardiness: ``C_k = sum_{m <= k} p[perm[m]]``), the terms
outside the segment keep their values, so a move inside a window ``[s, s + L)`` changes the
energy by

    delta = sum_{k in window} term_k(perm') - sum_{k in window} term_k(perm)

which costs O(L) given a per-position cache (for weighted tardiness: the completion times, so
that the prefix before the window is ``C_{s-1}``). ``IncrementalEnergy`` packages the pure
functions this needs; ``window_step_from_uniforms`` is the kernel step that uses them for ONE
chain, with moves drawn in a window of static length ``L`` (``sajax.moves.draw_window_move``):

    cache = inc.init_cache(perm, data)                  # pytree, every leaf (n, ...)
    delta, rows = inc.window_delta(cache, start, old, new, data)
    # old, new: (L,) items of perm[start:start + L] before / after the move;
    # rows: the cache's new rows start .. start + L - 1 (same pytree, leaves (L, ...))

The step writes the window of ``perm`` and of every cache leaf back with
``lax.dynamic_update_slice`` of ``where(accepted, new, old)``: branch-free and O(L). Only the
best-so-far copy, ``where(improved, perm, best_perm)``, touches all n positions.

With ``L >= n`` there is nothing to save: the step evaluates ``energy`` on the moved permutation
and keeps no cache (the plain kernel step, with the same moves). The cached energy is
``E + sum of accepted deltas``; the driver recomputes it (and every chain's
best energy) with the full ``energy`` at the end of each chunk, so rounding never accumulates
beyond one chunk (exact for integer data whose sums stay below 2**24 in float32). The path
assumes finite energies (a NaN delta is never accepted, as in ``sajax.kernel``).

An ``IncrementalEnergy`` is also a plain energy function (``inc(perm, data)`` calls
``inc.energy``), so it can be passed to ``sajax.anneal`` wherever an ``energy_fn`` goes; the
driver then takes the windowed path. With ``window >= n`` the moves are exactly the full ones.

    inc, data = sajax.objectives.weighted_tardiness(p, w, d, incremental=True)
    result = sajax.anneal(inc, key, len(p), data=data)          # windowed, O(L) per move
    result = sajax.anneal(inc._replace(window=16), key, len(p), data=data)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sajax.kernel import AnnealState, StepInfo, metropolis_accept
from sajax.moves import apply_move, draw_window_move

UNIFORMS = 5  # kind, window start, i, j, accept


class IncrementalEnergy(NamedTuple):
    """Pure functions of an energy with O(L) window deltas (see module doc); hashable."""

    energy: Callable[[jax.Array, Any], jax.Array]  # full energy(perm, data) -> ()
    init_cache: Callable[[jax.Array, Any], Any]  # (perm, data) -> pytree of (n, ...) leaves
    window_delta: Callable[..., tuple[jax.Array, Any]]  # see module doc
    window: int = 64  # static window length L (moves stay within L consecutive positions)

    def __call__(self, perm: jax.Array, data: Any) -> jax.Array:
        return self.energy(perm, data)


def window_length(inc: IncrementalEnergy, n: int) -> int:
    """The static window length used for permutations of length ``n``: min(window, n)."""
    if inc.window < 2:
        raise ValueError(f"the window must hold at least 2 positions; got {inc.window}")
    return min(int(inc.window), n)


def init_window_cache(inc: IncrementalEnergy, perm: jax.Array, data: Any) -> Any:
    """The cache for ``perm``; None when the window covers the whole permutation (unused)."""
    if window_length(inc, perm.shape[0]) == perm.shape[0]:
        return None
    return inc.init_cache(perm, data)


def window_step_from_uniforms(
    u: jax.Array,
    state: AnnealState,
    cache: Any,
    temperature: jax.Array,
    data: Any,
    *,
    inc: IncrementalEnergy,
    probs: jax.Array,
    n_valid: jax.Array | None = None,
    active: jax.Array | bool = True,
) -> tuple[AnnealState, Any, StepInfo]:
    """One windowed Metropolis step of one chain driven by ``u`` ((5,) uniforms in [0, 1)).

    ``active=False`` evaluates the move but changes nothing (padding steps of a chunk).
    Returns the new state, the new cache and the step's ``StepInfo``. When the window covers
    the whole permutation (``window >= n``) the step is the plain one (``inc.energy`` of the
    moved permutation, no cache: pass ``init_window_cache``'s None), so an incremental energy
    never costs more than the full one.
    """
    n = state.perm.shape[0]
    length = window_length(inc, n)
    n_valid = n if n_valid is None else n_valid
    kind, start, i, j = draw_window_move(u[:4], n_valid, probs, length)
    if length == n:  # the window is the whole permutation: the plain full-recompute step
        new = apply_move(state.perm, kind, i, j)
        proposed = jnp.asarray(inc.energy(new, data), jnp.float32)
        delta, rows = proposed - state.energy, None
    else:
        old = jax.lax.dynamic_slice(state.perm, (start,), (length,))
        new = apply_move(old, kind, i, j)
        delta, rows = inc.window_delta(cache, start, old, new, data)
        delta = jnp.asarray(delta, jnp.float32)
        proposed = state.energy + delta
    accepted = metropolis_accept(u[4], state.energy, proposed, temperature) & active
    improved = (proposed < state.best_energy) & accepted  # False for NaN

    def write(full, new_rows):
        if length == n:
            return jnp.where(accepted, new_rows, full)
        index = (start,) + (0,) * (full.ndim - 1)
        old_rows = jax.lax.dynamic_slice(full, index, new_rows.shape)
        return jax.lax.dynamic_update_slice(full, jnp.where(accepted, new_rows, old_rows), index)

    perm = write(state.perm, new)
    cache = cache if length == n else jax.tree.map(write, cache, rows)
    new_state = AnnealState(
        perm=perm,
        energy=jnp.where(accepted, proposed, state.energy),
        best_perm=jnp.where(improved, perm, state.best_perm),
        best_energy=jnp.where(improved, proposed, state.best_energy),
    )
    return new_state, cache, StepInfo(kind, proposed, delta, accepted, improved)
