"""The windowed incremental path: exact deltas, cached energy = recomputed energy, moves stay
in their window, determinism and one compilation per shape."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sajax
from sajax.incremental import (
    UNIFORMS,
    IncrementalEnergy,
    init_window_cache,
    window_step_from_uniforms,
)
from sajax.kernel import init
from sajax.moves import apply_move, draw_move, draw_window_move, move_mix
from sajax.objectives.weighted_tardiness import (
    WEIGHTED_TARDINESS,
    weighted_tardiness,
    weighted_tardiness_numpy,
)

N, WINDOW = 50, 8
PROBS = move_mix().probs


def instance(n=N, seed=0):
    rng = np.random.default_rng(seed)
    p, w = rng.integers(1, 20, n), rng.integers(1, 5, n)
    d = rng.integers(0, 10 * n, n)
    inc, data = weighted_tardiness(p, w, d, incremental=True, window=WINDOW)
    return inc, data, (p, w, d)


INC, DATA, PWD = instance()


def test_is_an_energy_function_and_hashable():
    perm = jnp.asarray(np.random.default_rng(1).permutation(N), jnp.int32)
    assert isinstance(INC, IncrementalEnergy) and INC.window == WINDOW
    assert float(INC(perm, DATA)) == weighted_tardiness_numpy(perm, *PWD)
    assert hash(INC) == hash(WEIGHTED_TARDINESS._replace(window=WINDOW))


def test_window_delta_equals_full_difference():
    """Sums stay far below 2**24, so float32 deltas must be exact against float64 NumPy."""
    rng = np.random.default_rng(2)
    delta_fn = jax.jit(INC.window_delta)
    for _ in range(60):
        perm = rng.permutation(N).astype(np.int32)
        cache = INC.init_cache(jnp.asarray(perm), DATA)
        start = int(rng.integers(0, N - WINDOW + 1))
        kind = int(rng.integers(0, 3))
        i, j = rng.choice(WINDOW, 2, replace=False)
        old = perm[start : start + WINDOW]
        new = np.asarray(apply_move(jnp.asarray(old), kind, i, j))
        moved = perm.copy()
        moved[start : start + WINDOW] = new
        delta, rows = delta_fn(cache, start, jnp.asarray(old), jnp.asarray(new), DATA)
        expected = weighted_tardiness_numpy(moved, *PWD) - weighted_tardiness_numpy(perm, *PWD)
        assert float(delta) == expected
        full = INC.init_cache(jnp.asarray(moved), DATA)
        for leaf, new_rows in zip(full, rows, strict=True):
            np.testing.assert_array_equal(leaf[start : start + WINDOW], new_rows)


def test_draw_window_move_ranges_and_small_n_equals_draw_move():
    u = jax.random.uniform(jax.random.key(0), (20_000, 4))
    kind, start, i, j = map(
        np.asarray, jax.vmap(draw_window_move, in_axes=(0, None, None, None))(u, 30, PROBS, 8)
    )
    assert start.min() == 0 and start.max() == 30 - 8
    assert i.min() == 0 and i.max() == 7 and j.min() == 0 and j.max() == 7 and np.all(i != j)
    # Symmetric proposal: (i, j) and (j, i) equally likely (Metropolis needs it for insert).
    counts = np.zeros((8, 8))
    np.add.at(counts, (i, j), 1)
    np.testing.assert_allclose(counts, counts.T, atol=5 * np.sqrt(counts.max()))
    # Every pair with 0 < hi - lo < window about equally likely: each position moves about
    # equally often, ends included.
    lo, hi = np.minimum(i, j) + start, np.maximum(i, j) + start
    pairs = np.zeros((30, 30))
    np.add.at(pairs, (lo, hi), 1)
    allowed = np.triu(np.ones((30, 30)), 1) * np.tril(np.ones((30, 30)), 7)
    assert np.all(pairs[allowed == 0] == 0)
    mean = len(u) / allowed.sum()
    assert np.all(np.abs(pairs[allowed == 1] - mean) < 5 * np.sqrt(mean))
    # n_valid <= window: start 0 and exactly draw_move's (kind, i, j).
    kind, start, i, j = jax.vmap(draw_window_move, in_axes=(0, None, None, None))(u, 6, PROBS, 8)
    ref = jax.vmap(draw_move, in_axes=(0, None, None))(u[:, jnp.array([0, 2, 3])], 6, PROBS)
    assert np.all(np.asarray(start) == 0)
    for a, b in zip((kind, i, j), ref, strict=True):
        np.testing.assert_array_equal(a, b)


@partial(jax.jit, static_argnames=("inc", "steps"))
def run_chain(key, perm, temperature, data, inc, steps, n_valid):
    def body(carry, u):
        state, cache = carry
        new, cache, info = window_step_from_uniforms(
            u, state, cache, temperature, data, inc=inc, probs=PROBS, n_valid=n_valid
        )
        return (new, cache), (state, new, cache, info)

    state = init(perm, inc, data)
    u = jax.random.uniform(key, (steps, UNIFORMS))
    return jax.lax.scan(body, (state, init_window_cache(inc, perm, data)), u)[1]


@pytest.mark.parametrize("temperature", [0.0, 20.0, jnp.inf])
@pytest.mark.parametrize("window", [WINDOW, 64])  # 64 >= N: the plain full-recompute step
def test_invariants_along_a_chain(temperature, window):
    inc = INC._replace(window=window)
    perm = jnp.asarray(np.random.default_rng(3).permutation(N), jnp.int32)
    before, states, caches, info = run_chain(
        jax.random.key(4), perm, temperature, DATA, inc, 1000, N
    )
    perms = np.asarray(states.perm)
    assert np.all(np.sort(perms, axis=1) == np.arange(N)), "a permutation stays a permutation"
    exact = np.array([weighted_tardiness_numpy(q, *PWD) for q in perms])
    np.testing.assert_array_equal(states.energy, exact)  # cached energy = recomputed energy
    best = np.array([weighted_tardiness_numpy(q, *PWD) for q in np.asarray(states.best_perm)])
    np.testing.assert_array_equal(states.best_energy, best)
    if window < N:
        recomputed = jax.vmap(inc.init_cache, in_axes=(0, None))(states.perm, DATA)
        for leaf, cached in zip(recomputed, caches, strict=True):
            np.testing.assert_array_equal(leaf, cached)  # the cache follows the permutation
    else:
        assert caches is None  # the window covers n: the plain step, no cache
    assert np.all(np.diff(np.asarray(states.best_energy)) <= 0), "best never rises"
    assert np.all(np.asarray(states.best_energy) <= np.asarray(states.energy))
    # Every step changes positions within one window of length min(window, N) only.
    changed = np.asarray(before.perm) != perms
    rows = np.nonzero(changed.any(axis=1))[0]
    assert rows.size > 0
    for r in rows:
        pos = np.nonzero(changed[r])[0]
        assert pos.max() - pos.min() < min(window, N)
    acc = np.asarray(info.accepted)
    if temperature == jnp.inf:
        assert acc.all()
    if temperature == 0.0:
        assert np.all(np.asarray(info.delta)[acc] <= 0)


def test_padding_positions_never_move():
    inc = INC._replace(window=4)
    perm = jnp.arange(N, dtype=jnp.int32)
    _, states, _, _ = run_chain(jax.random.key(5), perm, jnp.inf, DATA, inc, 500, 10)
    assert np.all(np.asarray(states.perm)[:, 10:] == np.arange(10, N))


def check_consistent(result, data_pwd=PWD):
    for perms in (result.best_perm[None], result.chain_best_perm, result.final_perm):
        assert np.all(np.sort(perms, axis=-1) == np.arange(perms.shape[-1]))
    exact = np.array([weighted_tardiness_numpy(q, *data_pwd) for q in result.final_perm])
    np.testing.assert_array_equal(result.final_energy, exact)
    exact = np.array([weighted_tardiness_numpy(q, *data_pwd) for q in result.chain_best_perm])
    np.testing.assert_array_equal(result.chain_best_energy, exact)
    assert result.best_energy == result.chain_best_energy.min()
    assert np.all(np.diff(result.history.best_energy) <= 0), "best never rises"


OPTS = dict(chains=8, chunk_size=64)


def test_driver_is_consistent_deterministic_and_improves():
    a = sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=640, **OPTS)
    b = sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=640, **OPTS)
    c = sajax.anneal(INC, jax.random.key(1), N, data=DATA, steps=640, **OPTS)
    check_consistent(a)
    for field in ("best_perm", "best_energy", "final_perm", "accepted"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.final_perm, c.final_perm)
    assert a.best_energy < a.history.best_energy[0] or a.best_energy == 0
    r = sajax.anneal(INC, jax.random.key(2), N, data=DATA, steps=300, restart_patience=1, **OPTS)
    check_consistent(r)


def test_anneal_many_with_incremental_energy():
    parts = [instance(seed=s) for s in range(3)]
    batched = jax.tree.map(lambda *x: jnp.stack(x), *(d for _, d, _ in parts))
    r = sajax.anneal_many(INC, jax.random.key(4), N, batched, steps=256, **OPTS)
    for b, (_, _, pwd) in enumerate(parts):
        assert r.best_energy[b] == weighted_tardiness_numpy(r.best_perm[b], *pwd)


def test_no_recompilation_and_proposals_are_refused():
    traces = []

    def counted(perm, data):
        traces.append(1)  # runs once per trace, never at execution
        return WEIGHTED_TARDINESS.energy(perm, data)

    inc = WEIGHTED_TARDINESS._replace(energy=counted, window=WINDOW)
    _, other, _ = instance(seed=9)
    sajax.anneal(inc, jax.random.key(0), N, data=DATA, steps=100, **OPTS)
    first = len(traces)
    assert first > 0
    sajax.anneal(
        inc,
        jax.random.key(1),
        N,
        data=other,
        steps=250,
        n_valid=30,
        moves=sajax.move_mix(1, 0, 0),
        schedule=sajax.geometric(50.0, 0.5, 250),
        **OPTS,
    )
    assert len(traces) == first, "a second call with the same shapes must not retrace"
    with pytest.raises(ValueError, match="proposals"):
        sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=10, proposals=2, **OPTS)
