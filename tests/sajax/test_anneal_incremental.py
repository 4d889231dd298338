"""The incremental (move-delta) path: exact deltas for every move, K proposals equal K
sequential steps, cached energy = recomputed energy, determinism, one compilation per shape."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sajax
from sajax.incremental import IncrementalEnergy, delta_step_from_uniforms
from sajax.kernel import init, metropolis_accept, pick, step_from_uniforms
from sajax.moves import INSERT, REVERSE, SWAP, apply_move, draw_move, move_mix
from sajax.objectives.weighted_tardiness import (
    WEIGHTED_TARDINESS,
    weighted_tardiness,
    weighted_tardiness_numpy,
)

N = 50
PROBS = move_mix().probs


def instance(n=N, seed=0):
    rng = np.random.default_rng(seed)
    p, w = rng.integers(1, 20, n), rng.integers(1, 5, n)
    d = rng.integers(0, 10 * n, n)
    inc, data = weighted_tardiness(p, w, d, incremental=True)
    return inc, data, (p, w, d)


INC, DATA, PWD = instance()


def test_is_an_energy_function_and_hashable():
    perm = jnp.asarray(np.random.default_rng(1).permutation(N), jnp.int32)
    assert isinstance(INC, IncrementalEnergy) and INC is WEIGHTED_TARDINESS
    assert float(INC(perm, DATA)) == weighted_tardiness_numpy(perm, *PWD)
    assert hash(INC) == hash(WEIGHTED_TARDINESS)


@pytest.mark.parametrize("kind", [SWAP, INSERT, REVERSE])
def test_move_delta_equals_full_difference(kind):
    """Every pair (i, j), ends and neighbours included. Sums stay far below 2**24, so float32
    deltas must be exact against float64 NumPy."""
    rng = np.random.default_rng(2 + kind)
    delta_fn = jax.jit(jax.vmap(INC.move_delta, in_axes=(None, None, 0, 0, None)))
    i, j = np.nonzero(~np.eye(N, dtype=bool))
    for _ in range(3):
        perm = rng.permutation(N).astype(np.int32)
        cache = INC.init_cache(jnp.asarray(perm), DATA)
        got = np.asarray(delta_fn(cache, kind, jnp.asarray(i), jnp.asarray(j), DATA))
        moved = jax.vmap(apply_move, in_axes=(None, None, 0, 0))(jnp.asarray(perm), kind, i, j)
        base = weighted_tardiness_numpy(perm, *PWD)
        expected = [weighted_tardiness_numpy(q, *PWD) - base for q in np.asarray(moved)]
        np.testing.assert_array_equal(got, expected)


STEP = jax.jit(partial(delta_step_from_uniforms, inc=INC, probs=PROBS))


def _draw(seed):
    """A random state of the instance, 6 proposals' uniforms, a cold or a hot temperature."""
    perm = jnp.asarray(np.random.default_rng(seed).permutation(N), jnp.int32)
    u = jax.random.uniform(jax.random.key(seed), (6, 4))
    return perm, init(perm, INC.energy, DATA), u, 3.0 if seed % 2 else 300.0


def test_k_proposals_equal_sequential_plain_steps_until_first_acceptance():
    """One K-proposal delta step = the plain single-proposal steps with the same uniforms,
    stopped at the first accept; ``sequential`` counts them."""
    plain = jax.jit(partial(step_from_uniforms, energy_fn=INC.energy, probs=PROBS))
    for seed in range(20):
        perm, state, u, temperature = _draw(seed)
        new, cache, info = STEP(u, state, INC.init_cache(perm, DATA), temperature, DATA)
        seq, steps = state, 0
        for k in range(6):
            seq, seq_info = plain(u[k], seq, temperature, DATA)
            steps += 1
            if seq_info.accepted:
                break
        assert np.array_equal(new.perm, seq.perm) and new.energy == seq.energy
        assert bool(info.accepted) == bool(seq_info.accepted)
        assert int(info.sequential) == steps
        fresh = INC.init_cache(new.perm, DATA)
        for leaf, cached in zip(fresh, cache, strict=True):
            np.testing.assert_array_equal(leaf, cached)  # the cache follows the permutation


def test_best_select_takes_the_lowest_energy_proposal_that_passes():
    """select="best": the delta step and the plain K-proposal step both take the lowest-energy
    proposal among those that pass their Metropolis test (scored here in NumPy)."""
    best = jax.jit(partial(delta_step_from_uniforms, inc=INC, probs=PROBS, select="best"))
    plain = jax.jit(partial(step_from_uniforms, energy_fn=INC.energy, probs=PROBS, select="best"))
    took_a_later_one = 0
    for seed in range(20):
        perm, state, u, temperature = _draw(seed)
        new, cache, info = best(u, state, INC.init_cache(perm, DATA), temperature, DATA)
        moved, energy = [], []
        for k in range(6):
            kind, i, j = draw_move(u[k, :3], N, PROBS)
            moved.append(np.asarray(apply_move(perm, kind, i, j)))
            energy.append(weighted_tardiness_numpy(moved[-1], *PWD))
        energy = np.array(energy, np.float32)
        passed = np.asarray(metropolis_accept(u[:, 3], state.energy, energy, temperature))
        if passed.any():
            k = int(np.argmin(np.where(passed, energy, np.inf)))
            took_a_later_one += k > int(np.argmax(passed))
            np.testing.assert_array_equal(new.perm, moved[k])
            assert float(new.energy) == energy[k] and bool(info.accepted)
        else:
            np.testing.assert_array_equal(new.perm, perm)
        assert int(info.sequential) == 6
        ref, _ = plain(u, state, temperature, DATA)
        np.testing.assert_array_equal(ref.perm, new.perm)
        fresh = INC.init_cache(new.perm, DATA)
        for leaf, cached in zip(fresh, cache, strict=True):
            np.testing.assert_array_equal(leaf, cached)
    assert took_a_later_one > 0  # the rule differs from "first" on these draws


def test_pick_first_and_best():
    passed = jnp.array([False, True, True, False])
    energies = jnp.array([0.0, 5.0, 3.0, 1.0])
    assert int(pick(passed, energies, "first")) == 1
    assert int(pick(passed, energies, "best")) == 2
    assert int(pick(jnp.zeros(4, bool), energies, "best")) == 0
    # +inf proposals from a +inf state pass; "best" then takes the first of them, as "first"
    inf = jnp.full(4, jnp.inf)
    assert int(pick(jnp.array([False, True, True, False]), inf, "best")) == 1
    with pytest.raises(ValueError, match="select"):
        pick(passed, energies, "worst")


@partial(jax.jit, static_argnames=("steps", "k"))
def run_chain(key, perm, temperature, steps, k, n_valid):
    def body(carry, u):
        state, cache = carry
        new, cache, info = delta_step_from_uniforms(
            u, state, cache, temperature, DATA, inc=INC, probs=PROBS, n_valid=n_valid
        )
        return (new, cache), (state, new, cache, info)

    state = init(perm, INC, DATA)
    u = jax.random.uniform(key, (steps, k, 4))
    return jax.lax.scan(body, (state, INC.init_cache(perm, DATA)), u)[1]


@pytest.mark.parametrize("temperature", [0.0, 20.0, jnp.inf])
def test_invariants_along_a_chain(temperature):
    perm = jnp.asarray(np.random.default_rng(3).permutation(N), jnp.int32)
    before, states, caches, info = run_chain(jax.random.key(4), perm, temperature, 400, 4, N)
    perms = np.asarray(states.perm)
    assert np.all(np.sort(perms, axis=1) == np.arange(N)), "a permutation stays a permutation"
    exact = np.array([weighted_tardiness_numpy(q, *PWD) for q in perms])
    np.testing.assert_array_equal(states.energy, exact)  # cached energy = recomputed energy
    best = np.array([weighted_tardiness_numpy(q, *PWD) for q in np.asarray(states.best_perm)])
    np.testing.assert_array_equal(states.best_energy, best)
    recomputed = jax.vmap(INC.init_cache, in_axes=(0, None))(states.perm, DATA)
    for leaf, cached in zip(recomputed, caches, strict=True):
        np.testing.assert_array_equal(leaf, cached)
    assert np.all(np.diff(np.asarray(states.best_energy)) <= 0), "best never rises"
    assert np.all(np.asarray(states.best_energy) <= np.asarray(states.energy))
    acc = np.asarray(info.accepted)
    moved = np.any(np.asarray(before.perm) != perms, axis=1)
    np.testing.assert_array_equal(acc, moved)
    seq = np.asarray(info.sequential)
    assert np.all((seq >= 1) & (seq <= 4)) and np.all(seq[~acc] == 4)
    if temperature == jnp.inf:
        assert acc.all() and np.all(seq == 1)
    if temperature == 0.0:
        assert np.all(np.asarray(info.delta)[acc] <= 0)


def test_padding_positions_never_move():
    perm = jnp.arange(N, dtype=jnp.int32)
    _, states, _, _ = run_chain(jax.random.key(5), perm, jnp.inf, 300, 2, 10)
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


OPTS = dict(chains=8, chunk_size=64, proposals=4)


def test_driver_is_consistent_deterministic_and_improves():
    a = sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=640, **OPTS)
    b = sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=640, **OPTS)
    c = sajax.anneal(INC, jax.random.key(1), N, data=DATA, steps=640, **OPTS)
    check_consistent(a)
    for field in ("best_perm", "best_energy", "final_perm", "accepted", "proposed"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.final_perm, c.final_perm)
    assert a.best_energy < a.history.best_energy[0] or a.best_energy == 0
    assert a.evaluated == 640 * 4
    assert np.all(a.proposed >= 640) and np.all(a.proposed <= a.evaluated)
    assert np.all(a.accepted <= a.proposed)
    r = sajax.anneal(INC, jax.random.key(2), N, data=DATA, steps=300, restart_patience=1, **OPTS)
    check_consistent(r)


def test_driver_with_best_select_is_consistent_and_deterministic():
    a = sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=640, select="best", **OPTS)
    b = sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=640, select="best", **OPTS)
    first = sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=640, **OPTS)
    check_consistent(a)
    np.testing.assert_array_equal(a.final_perm, b.final_perm)
    assert not np.array_equal(a.final_perm, first.final_perm)
    assert np.all(a.proposed == 640 * 4)  # every step counts as K
    with pytest.raises(ValueError, match="select"):
        sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=64, select="worst", **OPTS)


@pytest.mark.parametrize("chains", [1, 8])  # 1: the driver's no-vmap path
def test_one_proposal_is_the_plain_path_exactly(chains):
    """Same moves, same uniforms, exact deltas: the same chain, step for step."""
    opts = dict(chains=chains, chunk_size=100, steps=1000)
    plain = sajax.anneal(INC.energy, jax.random.key(3), N, data=DATA, **opts)
    fast = sajax.anneal(INC, jax.random.key(3), N, data=DATA, proposals=1, **opts)
    for field in ("best_perm", "best_energy", "final_perm", "final_energy", "accepted"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(plain, field))


def test_single_chain_path_equals_the_vmapped_one():
    """One instance x one chain runs without vmap; it must match a vmapped instance."""
    parts = [instance(seed=s) for s in range(2)]
    batched = jax.tree.map(lambda *x: jnp.stack(x), *(d for _, d, _ in parts))
    opts = dict(chains=1, chunk_size=50, steps=400, proposals=4)
    many = sajax.anneal_many(INC, jax.random.key(6), N, batched, **opts)
    one = sajax.anneal(INC, jax.random.key(6), N, data=parts[0][1], **opts)
    for field in ("best_perm", "best_energy", "final_perm", "proposed", "accepted"):
        np.testing.assert_array_equal(getattr(one, field), getattr(many, field)[0])
    first = jax.tree.map(lambda x: x[:1], batched)  # B = 1 with batched data: no vmap either
    alone = sajax.anneal_many(INC, jax.random.key(6), N, first, **opts)
    np.testing.assert_array_equal(alone.best_perm[0], one.best_perm)


def test_replica_exchange_and_restarts_keep_energies_exact():
    r = sajax.anneal(
        INC,
        jax.random.key(7),
        N,
        data=DATA,
        steps=640,
        ladder_ratio=5.0,
        exchange=True,
        restart_patience=1,
        **OPTS,
    )
    check_consistent(r)
    assert r.exchanges.sum() > 0


def test_anneal_many_with_incremental_energy():
    parts = [instance(seed=s) for s in range(3)]
    batched = jax.tree.map(lambda *x: jnp.stack(x), *(d for _, d, _ in parts))
    r = sajax.anneal_many(INC, jax.random.key(4), N, batched, steps=256, **OPTS)
    for b, (_, _, pwd) in enumerate(parts):
        assert r.best_energy[b] == weighted_tardiness_numpy(r.best_perm[b], *pwd)


def test_no_recompilation():
    traces = []

    def counted(perm, data):
        traces.append(1)  # runs once per trace, never at execution
        return WEIGHTED_TARDINESS.energy(perm, data)

    inc = WEIGHTED_TARDINESS._replace(energy=counted)
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
        sajax.anneal(INC, jax.random.key(0), N, data=DATA, steps=10, chains=2, proposals=0)
