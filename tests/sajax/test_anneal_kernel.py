"""The one-chain kernel: Metropolis rule, invariants, NaN safety, multi-proposal equivalence."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sajax.kernel import init, metropolis_accept, step, step_from_uniforms
from sajax.moves import move_mix
from sajax.objectives import weighted_tardiness

N = 12
RNG = np.random.default_rng(0)
ENERGY, DATA = weighted_tardiness(
    RNG.integers(1, 20, N), RNG.integers(1, 5, N), RNG.integers(0, 100, N)
)
PROBS = move_mix().probs


def test_metropolis_rule():
    acc = jax.jit(metropolis_accept)
    assert acc(0.99, 5.0, 5.0, 0.0) and acc(0.99, 5.0, 4.0, 0.0)  # never worse: always
    assert not acc(0.0, 5.0, 5.1, 0.0)  # T = 0: uphill never
    assert acc(0.999, 5.0, 1e6, jnp.inf)  # T = inf: anything finite
    assert not acc(0.0, 5.0, jnp.nan, jnp.inf)  # NaN proposal: never
    assert acc(0.99, jnp.nan, 1e6, 1.0)  # NaN current counts as +inf
    # exp(-1) ~ 0.368
    assert acc(0.36, 0.0, 1.0, 1.0) and not acc(0.37, 0.0, 1.0, 1.0)
    # Far uphill: exp(-delta/T) would be a float32 denormal or 0; the test says no even for u = 0
    # (probability < 1e-34), and a move just inside the floor still passes a small enough u.
    assert not acc(0.0, 0.0, 100.0, 1.0) and not acc(0.0, 0.0, 1e30, 1e-3)
    assert acc(1e-30, 0.0, 60.0, 1.0) and not acc(1e-20, 0.0, 60.0, 1.0)  # exp(-60) ~ 8.8e-27


@partial(jax.jit, static_argnames="steps")
def run_chain(key, perm, temperature, steps, proposals=1):
    def body(state, k):
        new, info = step(
            k, state, temperature, DATA, energy_fn=ENERGY, probs=PROBS, proposals=proposals
        )
        return new, (new, info)

    return jax.lax.scan(body, init(perm, ENERGY, DATA), jax.random.split(key, steps))


@pytest.mark.parametrize("temperature", [0.0, 30.0, jnp.inf])
def test_invariants_along_a_chain(temperature):
    perm = jnp.asarray(RNG.permutation(N), jnp.int32)
    _, (states, info) = run_chain(jax.random.key(1), perm, temperature, steps=300)
    perms, best = np.asarray(states.perm), np.asarray(states.best_perm)
    assert np.all(np.sort(perms, axis=1) == np.arange(N)), "a permutation stays a permutation"
    recomputed = jax.vmap(ENERGY, in_axes=(0, None))(states.perm, DATA)
    np.testing.assert_array_equal(states.energy, recomputed)  # cached energy is the energy
    best_recomputed = jax.vmap(ENERGY, in_axes=(0, None))(states.best_perm, DATA)
    np.testing.assert_array_equal(states.best_energy, best_recomputed)
    assert np.all(np.diff(np.asarray(states.best_energy)) <= 0), "best never rises"
    assert np.all(np.asarray(states.best_energy) <= np.asarray(states.energy))
    assert np.all(np.sort(best, axis=1) == np.arange(N))
    rate = float(np.mean(info.accepted))
    if temperature == jnp.inf:
        assert rate == 1.0  # force accept
    if temperature == 0.0:
        assert np.all(np.asarray(info.delta)[np.asarray(info.accepted)] <= 0)  # force reject uphill
        assert np.all(np.diff(np.asarray(states.energy)) <= 0)


def test_same_key_same_chain_and_different_key_differs():
    perm = jnp.arange(N, dtype=jnp.int32)
    a, _ = run_chain(jax.random.key(7), perm, 20.0, steps=200)
    b, _ = run_chain(jax.random.key(7), perm, 20.0, steps=200)
    c, _ = run_chain(jax.random.key(8), perm, 20.0, steps=200)
    assert np.array_equal(a.perm, b.perm) and a.energy == b.energy
    assert not np.array_equal(a.perm, c.perm)


def test_nan_energy_is_never_accepted_nor_best():
    def energy(perm, data):  # NaN whenever item 0 is first, else the tardiness
        return jnp.where(perm[0] == 0, jnp.nan, ENERGY(perm, data))

    state = init(jnp.arange(N, dtype=jnp.int32), energy, DATA)  # starts at NaN
    assert jnp.isnan(state.energy) and state.best_energy == jnp.inf

    def body(s, k):
        s, info = step(k, s, jnp.inf, DATA, energy_fn=energy, probs=PROBS)
        return s, (s, info)

    final, (states, info) = jax.lax.scan(body, state, jax.random.split(jax.random.key(0), 400))
    proposed_nan = np.isnan(np.asarray(info.proposed_energy))
    assert proposed_nan.any(), "the test must propose NaN energies"
    assert not np.any(np.asarray(info.accepted)[proposed_nan])
    assert not np.any(np.isnan(np.asarray(states.best_energy)))
    first_accept = int(np.argmax(np.asarray(info.accepted)))
    assert not np.any(np.isnan(np.asarray(states.energy)[first_accept:]))
    assert int(final.best_perm[0]) != 0


def test_k_proposals_equal_sequential_steps_until_first_acceptance():
    """A K-proposal step is K single steps with the same uniforms, stopped at the first accept."""
    step1 = jax.jit(partial(step_from_uniforms, energy_fn=ENERGY, probs=PROBS))
    for seed in range(20):
        perm = jnp.asarray(np.random.default_rng(seed).permutation(N), jnp.int32)
        state = init(perm, ENERGY, DATA)
        u = jax.random.uniform(jax.random.key(seed), (6, 4))
        batched, info = step1(u, state, 5.0, DATA)
        seq, steps = state, 0
        for k in range(6):
            seq, seq_info = step1(u[k], seq, 5.0, DATA)
            steps += 1
            if seq_info.accepted:
                break
        assert np.array_equal(batched.perm, seq.perm) and batched.energy == seq.energy
        assert bool(info.accepted) == bool(seq_info.accepted)
        assert int(info.sequential) == steps and int(seq_info.sequential) == 1
        assert batched.best_energy <= seq.best_energy
