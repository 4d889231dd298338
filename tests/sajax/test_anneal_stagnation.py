"""Stagnation kicks (sajax.stagnation): noticed, escaped, counted; off with restarts=False."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sajax
from sajax.moves import apply_move
from sajax.stagnation import default_patience, kick, stale_after

N = 30
WIDE = np.arange(N)  # the wide basin's bottom: energy 0
NARROW = WIDE.copy()
NARROW[9:15] = np.r_[WIDE[12:15], WIDE[9:12]]  # the better one: energy -1, two blocks exchanged
BLOCK = slice(9, 15)


def two_basins(perm):
    """Wide basin: footrule distance to WIDE (/ 1000). Narrow: orders that agree with NARROW on at
    least 4 of the 6 exchanged positions, -1 + footrule distance to NARROW (/ 1000). No single
    swap, insert or reversal from WIDE reaches the narrow basin (checked below)."""
    hits = jnp.sum(perm[BLOCK] == jnp.asarray(NARROW[BLOCK]))
    wide = jnp.sum(jnp.abs(perm - jnp.asarray(WIDE))) / 1000.0
    narrow = -1.0 + jnp.sum(jnp.abs(perm - jnp.asarray(NARROW))) / 1000.0
    return jnp.where(hits >= 4, narrow, wide).astype(jnp.float32)


OPTS = dict(
    chains=1,
    proposals=16,
    steps=12_000,
    chunk_size=256,
    init_perms=WIDE[None],
    schedule=sajax.constant(0.0),  # greedy: a local optimum is a trap without kicks
)


def test_no_single_move_leaves_the_wide_basin_bottom_for_the_narrow_one():
    energies = [
        float(two_basins(apply_move(jnp.asarray(WIDE), kind, i, j)))
        for kind in range(3)
        for i in range(N)
        for j in range(N)
        if i != j
    ]
    assert min(energies) > 0.0  # WIDE (energy 0) is a strict local optimum
    assert float(two_basins(jnp.asarray(NARROW))) == -1.0


def test_kicks_fire_and_find_the_narrow_basin():
    r = sajax.anneal(two_basins, jax.random.key(0), N, **OPTS)
    assert r.restarts[0] > 0 and r.history.restarts[-1] == r.restarts[0]
    assert r.best_energy == -1.0 and np.array_equal(r.best_perm, NARROW)
    assert 0 <= r.last_improvement[0] < r.steps
    assert r.restart_patience == default_patience(np.array([N]), 16)[0]


def test_without_restarts_the_chain_stays_in_the_wide_basin():
    r = sajax.anneal(two_basins, jax.random.key(0), N, restarts=False, **OPTS)
    assert r.restarts[0] == 0 and r.restart_patience == 0
    assert r.best_energy == 0.0 and np.array_equal(r.best_perm, WIDE)
    assert r.accepted[0] == 0 and r.last_improvement[0] == -1
    assert np.all(r.history.acceptance == 0.0)


def test_incremental_energy_and_several_chains_kick_and_stay_consistent():
    rng = np.random.default_rng(3)
    n = 40
    p, w = rng.integers(1, 30, n), rng.integers(1, 10, n)
    inc, data = sajax.objectives.weighted_tardiness(p, w, rng.integers(0, 400, n), incremental=True)
    r = sajax.anneal(
        inc, jax.random.key(1), n, data=data, chains=4, proposals=8, steps=3000, chunk_size=100
    )
    assert np.all(r.restarts > 0), "greedy chains at n = 40 stall within 3000 steps"
    recompute = jax.vmap(lambda q: inc(q, data))
    np.testing.assert_allclose(recompute(r.final_perm), r.final_energy, rtol=1e-6)
    np.testing.assert_allclose(recompute(r.chain_best_perm), r.chain_best_energy, rtol=1e-6)
    assert np.all(np.sort(r.final_perm, axis=1) == np.arange(n))
    assert np.all(np.diff(r.history.restarts) >= 0) and r.history.restarts[-1] == r.restarts.sum()
    assert np.all(r.last_improvement < r.steps)


def test_kick_moves_only_the_valid_positions():
    n, n_valid = 12, 9
    probs = sajax.move_mix().probs
    for seed in range(50):
        u = jax.random.uniform(jax.random.key(seed), (8, 3))
        moved = np.asarray(kick(u, jnp.arange(n), n_valid, probs))
        assert np.array_equal(np.sort(moved), np.arange(n))
        assert np.array_equal(moved[n_valid:], np.arange(n_valid, n))
        assert not np.array_equal(moved, np.arange(n))
    single = kick(jnp.zeros((3, 3)), jnp.arange(5), 1, probs)
    assert np.array_equal(single, np.arange(5)), "n_valid = 1: nothing moves"


def test_stale_counts_steps_since_the_last_improvement():
    f, t = False, True
    assert stale_after(jnp.int32(5), jnp.array([f, f, f, f]), jnp.array([t, t, t, f])) == 8
    assert stale_after(jnp.int32(5), jnp.array([f, t, f, f]), jnp.array([t, t, t, t])) == 2


def test_bad_patience_and_restarts_are_refused():
    with pytest.raises(ValueError, match="restart_patience"):
        sajax.anneal(two_basins, jax.random.key(0), N, restart_patience=0, steps=10)
    with pytest.raises(ValueError, match="restarts"):
        sajax.anneal(two_basins, jax.random.key(0), N, restarts="yes", steps=10)


def test_plan_summary_carries_the_search_stall_figures():
    from sajax.engine_model import make_engine_model
    from sajax.planner import PlanConfig, plan
    from sajax.problem import make_problem

    rng = np.random.default_rng(0)
    inp, out = rng.integers(4, 120, 20), rng.integers(1, 40, 20)
    alone = 5.0 * out + 0.5 * (inp + out)
    problem = make_problem(inp, out, slo_e2e_ms=alone + rng.uniform(0.2, 1.0, 20) * alone.sum() / 8)
    model = make_engine_model(slots=4, token_budget=64, a_ms=5.0, b_ms=0.5, c_ms=0.001)
    # "classic": the planner's search by sajax.anneal_many (the batched search has no kicks)
    config = PlanConfig(chains=4, steps=256, chunk_size=32, cap_finalists=1, search="classic")
    s = plan(problem, model, config, jax.random.key(0)).summary
    assert s.search_restarts >= 0 and -1 <= s.search_last_improvement < s.steps
    assert 0.0 <= s.search_acceptance <= 1.0
    assert {"search_restarts", "search_last_improvement", "search_acceptance"} <= set(s.as_dict())
