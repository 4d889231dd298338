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

Windowed moves (``draw_window_move``) for a static window length ``L``: the pair is drawn
uniformly among the pairs ``lo < hi`` with ``hi - lo < L`` (the gap ``g`` by inverse CDF of
``P(g) ~ n_valid - g``, then ``lo`` uniform), in a random orientation, and the window is
``start = min(lo, n_valid - L)``. Every move permutes only the segment ``[lo, hi]``, so a
windowed move is ``apply_move`` on the slice ``perm[start:start + L]``: O(L) work instead of
O(n). Every position is moved about equally often (a window start drawn uniformly would leave
the first and last positions L times less often moved). The proposal is symmetric (the pair
(i, j) and its inverse (j, i) are equally likely, as Metropolis needs); with ``n_valid <= L``
the move distribution is exactly ``draw_move``'s.
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


def draw_window_move(
    u: jax.Array, n_valid: jax.Array, probs: jax.Array, window: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Map four uniforms to ``(kind, start, i, j)``, with i, j relative to the window ``start``.

    ``0 <= start <= max(n_valid - window, 0)``, ``0 <= i, j < min(window, n_valid)``, ``i != j``:
    the move is ``apply_move`` on ``perm[start:start + window]`` (see module doc). With
    ``n_valid <= window`` this is ``draw_move(u[[0, 2, 3]])`` with ``start = 0``.
    """
    n_valid = jnp.asarray(n_valid, jnp.int32)
    kind, i_all, j_all = draw_move(jnp.stack([u[0], u[2], u[3]]), n_valid, probs)
    # Otherwise: a pair uniform among those with 0 < hi - lo < window, then an orientation.
    nf = n_valid.astype(jnp.float32)
    longest = window - 1
    total = longest * nf - longest * (longest + 1) / 2  # pairs with gap <= longest
    # Inverse CDF of P(gap = g) ~ (n_valid - g): F(g) = g n - g (g + 1) / 2.
    b = nf - 0.5
    root = b - jnp.sqrt(jnp.maximum(b * b - 2.0 * u[1] * total, 0.0))
    gap = jnp.clip(jnp.floor(root).astype(jnp.int32) + 1, 1, longest)
    lo = jnp.minimum((u[2] * (n_valid - gap)).astype(jnp.int32), n_valid - gap - 1)
    start = jnp.clip(lo, 0, jnp.maximum(n_valid - window, 0))
    forward = u[3] < 0.5
    i_short = jnp.where(forward, lo, lo + gap) - start
    j_short = jnp.where(forward, lo + gap, lo) - start
    small = n_valid <= window
    start = jnp.where(small, 0, start)
    return kind, start, jnp.where(small, i_all, i_short), jnp.where(small, j_all, j_short)


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
