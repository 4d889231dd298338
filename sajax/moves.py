"""Neighbourhood moves on permutations: swap, insert (shift) and segment reversal.

Every move is written as a *source index*: the new permutation is ``perm[src]`` with ``src`` an
(n,) int32 array computed in closed form from two distinct positions ``i != j`` (no scatter, no
branch). With ``k = 0..n-1``:

    swap(i, j):     src[k] = j if k == i, i if k == j, else k
    insert(a, b):   the item at position a moves to position b, the items between shift by one:
                    src[b] = a;  src[k] = k + 1 for a <= k < b;  src[k] = k - 1 for b < k <= a
    reverse(i, j):  src[k] = lo + hi - k for lo <= k <= hi (lo, hi = min, max of i, j), else k

The kind of move is drawn from a configurable mix ``MoveMix.probs`` (an array, so a new mix does
not recompile). Only the first ``n_valid`` positions are ever moved: a problem padded to a size
bucket keeps its padding rows at the tail.

    mix = move_mix(swap=0.3, insert=0.5, reverse=0.2)
    kind, i, j = draw_move(u, n_valid, mix.probs)   # u: (3,) uniforms in [0, 1)
    new_perm = apply_move(perm, kind, i, j)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SWAP = 0
INSERT = 1
REVERSE = 2
MOVE_NAMES = ("swap", "insert", "reverse")


class MoveMix(NamedTuple):
    probs: jax.Array  # (3,) float32, probabilities of swap, insert, reverse; sum to 1


def move_mix(swap: float = 0.3, insert: float = 0.5, reverse: float = 0.2) -> MoveMix:
    """A move mix from non-negative weights (normalised to probabilities)."""
    weights = np.array([swap, insert, reverse], dtype=np.float64)
    if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"move weights must be finite, >= 0 and not all 0; got {weights}")
    return MoveMix(probs=jnp.asarray(weights / weights.sum(), dtype=jnp.float32))


def draw_move(
    u: jax.Array, n_valid: jax.Array, probs: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Map three uniforms in [0, 1) to (kind, i, j) with 0 <= i, j < n_valid and i != j.

    ``kind`` is drawn by inverse CDF of ``probs``; ``j`` is ``i`` plus a uniform offset in
    1..n_valid-1 (mod n_valid), so the pair is never degenerate when ``n_valid >= 2``.
    """
    cdf = jnp.cumsum(probs)
    kind = jnp.sum(u[0] >= cdf[:-1]).astype(jnp.int32)
    n_valid = jnp.asarray(n_valid, jnp.int32)
    i = jnp.minimum((u[1] * n_valid).astype(jnp.int32), n_valid - 1)
    span = jnp.maximum(n_valid - 1, 1)
    offset = 1 + jnp.minimum((u[2] * span).astype(jnp.int32), span - 1)
    j = (i + offset) % jnp.maximum(n_valid, 1)
    return kind, i, j


def source_index(kind: jax.Array, i: jax.Array, j: jax.Array, n: int) -> jax.Array:
    """(n,) int32 ``src`` such that ``perm[src]`` is the moved permutation (see module doc)."""
    k = jnp.arange(n, dtype=jnp.int32)
    swap = jnp.where(k == i, j, jnp.where(k == j, i, k))
    forward = (i < j) & (k >= i) & (k < j)
    backward = (i > j) & (k > j) & (k <= i)
    insert = jnp.where(k == j, i, jnp.where(forward, k + 1, jnp.where(backward, k - 1, k)))
    lo, hi = jnp.minimum(i, j), jnp.maximum(i, j)
    reverse = jnp.where((k >= lo) & (k <= hi), lo + hi - k, k)
    return jnp.where(kind == SWAP, swap, jnp.where(kind == INSERT, insert, reverse))


def apply_move(perm: jax.Array, kind: jax.Array, i: jax.Array, j: jax.Array) -> jax.Array:
    """The permutation after one move (a gather; never changes the multiset of items)."""
    return perm[source_index(kind, i, j, perm.shape[0])]
