"""Moves and the blocked cumsum: closed-form index maps against a plain NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sajax.moves import INSERT, REVERSE, SWAP, apply_move, draw_move, move_mix
from sajax.ops import blocked_cumsum

_apply = jax.jit(apply_move)


def reference_move(perm, kind, i, j):
    q = list(perm)
    if kind == SWAP:
        q[i], q[j] = q[j], q[i]
    elif kind == INSERT:
        item = q.pop(i)
        q.insert(j, item)
    else:
        lo, hi = min(i, j), max(i, j)
        q[lo : hi + 1] = q[lo : hi + 1][::-1]
    return q


def test_examples():
    perm = jnp.arange(5, dtype=jnp.int32)
    assert apply_move(perm, SWAP, 1, 3).tolist() == [0, 3, 2, 1, 4]
    assert apply_move(perm, INSERT, 1, 3).tolist() == [0, 2, 3, 1, 4]
    assert apply_move(perm, INSERT, 3, 1).tolist() == [0, 3, 1, 2, 4]
    assert apply_move(perm, REVERSE, 3, 0).tolist() == [3, 2, 1, 0, 4]


@settings(max_examples=60, deadline=None)
@given(
    n=st.sampled_from([2, 3, 7, 12]),
    kind=st.sampled_from([SWAP, INSERT, REVERSE]),
    data=st.data(),
)
def test_matches_reference_and_stays_a_permutation(n, kind, data):
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n - 1).filter(lambda x: x != i))
    perm = np.random.default_rng(n * 31 + i).permutation(n).astype(np.int32)
    moved = np.asarray(_apply(jnp.asarray(perm), kind, i, j))
    assert moved.tolist() == reference_move(perm.tolist(), kind, i, j)
    assert sorted(moved.tolist()) == list(range(n))


def test_draw_move_ranges_and_mix():
    probs = move_mix(swap=0.2, insert=0.5, reverse=0.3).probs
    u = jax.random.uniform(jax.random.key(0), (20_000, 3))
    kind, i, j = jax.vmap(draw_move, in_axes=(0, None, None))(u, 7, probs)
    kind, i, j = map(np.asarray, (kind, i, j))
    assert i.min() == 0 and i.max() == 6 and j.min() == 0 and j.max() == 6
    assert np.all(i != j)
    freq = np.bincount(kind, minlength=3) / len(kind)
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.02)


def test_move_mix_validates():
    with pytest.raises(ValueError):
        move_mix(swap=-1)
    with pytest.raises(ValueError):
        move_mix(0, 0, 0)


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 100, 1000])
def test_blocked_cumsum_is_cumsum(n):
    x = np.random.default_rng(n).integers(0, 100, (3, n)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(blocked_cumsum(jnp.asarray(x))), np.cumsum(x, -1))
