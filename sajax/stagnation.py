"""Stagnation that is noticed and escaped: kicks from a chain's best (iterated local search).

A chain that runs cold, or greedily (``select="best"``), reaches a local optimum (or a plateau
around one) and then spends its remaining steps there: its best never improves. The driver
counts, per chain, the kernel steps since its best last improved (``stale``); once that reaches
the ``patience``, the chain is *kicked*: its current state becomes a best order perturbed by
``KICK_MOVES`` random moves of the run's move mix (full-range swaps, inserts and reversals:
random segment moves), scored in full, and the search goes on from there. Its own best is kept,
so a kick never loses a good order; a kick whose descent does not beat the best within another
``patience`` steps is followed by a new kick from the best (iterated local search with "better"
acceptance).

With several chains per instance every other kick of a chain starts from the instance's best
(the best of all its chains at the start of the chunk) instead of its own: a jump to another
chain's best basin, perturbed so that the chains do not all sit on one order.

Patience. Where a K-proposal step samples K moves, a local optimum of the swap/insert/reverse
neighbourhood (about ``3 n^2 / 2`` moves) is visible after about ``n^2 / K`` steps without a new
best; the default patience is ``PATIENCE_SCALE * n_valid^2 / K`` steps (at least
``MIN_PATIENCE``): weighted tardiness has wide plateaus, and a descent from a kick needs time to
cross them (tuned on the generated suite, ``benchmarks/wt_generated.py``: 8 moves and 3x beat
block exchanges of up to n/10 jobs, fewer or more moves, and 0.3-1x or 6-10x). It is an array
per instance, so a new n or patience never recompiles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sajax.moves import draw_move, source_index

KICK_MOVES = 8  # random moves per kick
PATIENCE_SCALE = 3.0  # default patience = PATIENCE_SCALE * n_valid**2 / proposals steps
MIN_PATIENCE = 32  # steps


def default_patience(n_valid: np.ndarray, proposals: int) -> np.ndarray:
    """(B,) int32 steps without a new best before a kick (module doc)."""
    n_valid = np.asarray(n_valid, np.float64)
    steps = np.ceil(PATIENCE_SCALE * n_valid**2 / proposals)
    return np.maximum(steps, MIN_PATIENCE).astype(np.int32)


def kick(u: jax.Array, perm: jax.Array, n_valid: jax.Array, probs: jax.Array) -> jax.Array:
    """``perm`` after ``len(u)`` random moves of the mix ``probs``; ``u``: (moves, 3) uniforms in
    [0, 1). The identity when ``n_valid < 2``; positions from ``n_valid`` on never move."""

    def one(p, u_m):
        kind, i, j = draw_move(u_m, n_valid, probs)
        src = source_index(kind, i, j, p.shape[0])
        return p[jnp.where(n_valid >= 2, src, jnp.arange(p.shape[0]))], None

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


def segment_length(chunk_size: int, most: int = 64) -> int:
    """The largest divisor of ``chunk_size`` up to ``most``: steps between stagnation checks."""
    return max(d for d in range(1, min(most, chunk_size) + 1) if chunk_size % d == 0)
