"""Stagnation that is noticed and escaped: kicks from a chain's best (iterated local search).

A chain that runs cold, or greedily (``select="best"``), reaches a local optimum and then spends
its remaining steps there: every proposal fails, its best never improves. The driver counts, per
chain, the kernel steps since its best last improved (``stale``); once that reaches the
``patience``, the chain is *kicked*: its current state becomes a perturbation of a best order
(``KICK_MOVES`` random block exchanges, each a local double-bridge), scored in full, and the
search goes on from there. Its own best is kept, so a kick can never lose a good order; a kick
whose descent does not beat the best within another ``patience`` steps is followed by a new kick
from the best again (iterated local search with "better" acceptance).

With several chains per instance every other kick of a chain starts from the instance's best
(the best of all its chains at the start of the chunk) instead of its own: a jump to another
chain's best basin, perturbed so that the chains do not all sit on one order.

Block exchange (the kick's move). Positions ``a < b < c <= n_valid`` with ``b - a`` and ``c - b``
drawn in 1..``span``: the blocks ``[a, b)`` and ``[b, c)`` trade places,

    new = perm[:a] ++ perm[b:c] ++ perm[a:b] ++ perm[c:]

a gather with the closed-form source index below (no scatter, no branch). A few such exchanges
move several jobs by up to ``span`` positions: far enough that the descent that follows finds
another basin, near enough that the order's good structure survives.

Patience. Where a K-proposal step samples K moves, a local optimum of the swap/insert/reverse
neighbourhood (about ``3 n^2 / 2`` moves) is visible after about ``n^2 / K`` steps without a new
best; the default patience is ``PATIENCE_SCALE * n_valid^2 / K`` steps (at least ``MIN_PATIENCE``).
It is an array per instance, so a new n or patience never recompiles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KICK_MOVES = 3  # block exchanges per kick
PATIENCE_SCALE = 1.0  # default patience = PATIENCE_SCALE * n_valid**2 / proposals steps
MIN_PATIENCE = 32  # steps
SPAN_SHARE = 0.1  # a kick's blocks are up to this share of n_valid long (at least 2)


def default_patience(n_valid: np.ndarray, proposals: int) -> np.ndarray:
    """(B,) int32 steps without a new best before a kick (module doc)."""
    n_valid = np.asarray(n_valid, np.float64)
    steps = np.ceil(PATIENCE_SCALE * n_valid**2 / proposals)
    return np.maximum(steps, MIN_PATIENCE).astype(np.int32)


def default_span(n_valid: np.ndarray) -> np.ndarray:
    """(B,) int32 longest block of a kick."""
    n_valid = np.asarray(n_valid, np.float64)
    return np.maximum(np.round(SPAN_SHARE * n_valid), 2).astype(np.int32)


def block_exchange_index(u: jax.Array, n: int, n_valid: jax.Array, span: jax.Array) -> jax.Array:
    """(n,) int32 source index of one block exchange drawn from ``u`` ((3,) uniforms in [0, 1)).

    The identity when ``n_valid < 2``; positions from ``n_valid`` on never move.
    """
    n_valid = jnp.asarray(n_valid, jnp.int32)
    span = jnp.maximum(jnp.asarray(span, jnp.int32), 1)
    first = 1 + jnp.minimum((u[0] * span).astype(jnp.int32), span - 1)
    second = 1 + jnp.minimum((u[1] * span).astype(jnp.int32), span - 1)
    first = jnp.minimum(first, jnp.maximum(n_valid - 1, 1))
    second = jnp.minimum(second, jnp.maximum(n_valid - first, 1))
    room = jnp.maximum(n_valid - first - second + 1, 1)
    a = jnp.minimum((u[2] * room).astype(jnp.int32), room - 1)
    b, c = a + first, a + first + second
    k = jnp.arange(n, dtype=jnp.int32)
    moved_up = (k >= a) & (k < a + second)  # the block [b, c) now starts at a
    moved_down = (k >= a + second) & (k < c)  # the block [a, b) now ends at c
    src = jnp.where(moved_up, b + (k - a), jnp.where(moved_down, a + (k - a - second), k))
    return jnp.where(n_valid >= 2, src, k)


def kick(u: jax.Array, perm: jax.Array, n_valid: jax.Array, span: jax.Array) -> jax.Array:
    """``perm`` after ``len(u)`` block exchanges; ``u``: (moves, 3) uniforms in [0, 1)."""

    def one(p, u_m):
        return p[block_exchange_index(u_m, p.shape[0], n_valid, span)], None

    out, _ = jax.lax.scan(one, perm, u)
    return out


def stale_after(stale: jax.Array, improved: jax.Array, active: jax.Array) -> jax.Array:
    """Steps without a new best after a segment of steps with these (m,) ``improved``/``active``
    flags, from ``stale`` before it."""
    m = improved.shape[0]
    idx = jnp.arange(m)
    last = jnp.max(jnp.where(improved, idx, -1))
    after_last = jnp.sum(active & (idx > last))
    return jnp.where(last >= 0, after_last, stale + jnp.sum(active)).astype(jnp.int32)


def segment_length(chunk_size: int, most: int = 16) -> int:
    """The largest divisor of ``chunk_size`` up to ``most``: steps between stagnation checks."""
    return max(d for d in range(1, min(most, chunk_size) + 1) if chunk_size % d == 0)
