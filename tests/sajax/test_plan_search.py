"""The planner's batched search (sajax.plan_search, sajax.plan_anneal): moves, exact energies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sajax import plan_search as ps
from sajax.engine_model import make_engine_model
from sajax.moves import INSERT, SWAP
from sajax.objectives.slo import get_objective, objective_params
from sajax.plan_anneal import auto_chains, block_for
from sajax.planner import PlanConfig, plan
from sajax.problem import make_problem
from sajax.simulate import simulate

N, N_REAL, BLOCK = 64, 60, 8


def test_drawn_moves_start_in_the_block_and_hit_moves_bring_a_miss_forward():
    rng = np.random.default_rng(0)
    hit = jnp.asarray(rng.random(N) < 0.5)
    probs = jnp.asarray(ps.move_probs(1, 1, 1, 1, 1))
    draw = jax.jit(ps.draw_moves, static_argnums=5)
    kinds = set()
    for t in range(300):
        u = jnp.asarray(rng.random(5), jnp.float32)
        b = jnp.int32(t % (N_REAL // BLOCK))
        kind, i, j = (int(x) for x in draw(u, b, hit, jnp.int32(N_REAL), probs, BLOCK))
        lo, hi = min(i, j), max(i, j)
        assert int(b) * BLOCK <= lo < (int(b) + 1) * BLOCK and lo < hi < N_REAL
        k = int(np.sum(np.asarray(u[0]) >= np.cumsum(np.asarray(probs))[:-1]))
        kinds.add(k)
        later_miss = np.any(~np.asarray(hit)[lo + 1 : N_REAL])
        if k == ps.HIT_IN and later_miss:  # a later miss is inserted at lo
            assert kind == INSERT and j == lo and not bool(hit[i])
        if k == ps.HIT_SWAP and later_miss:  # a miss swaps with a position of the block
            assert kind == SWAP and not bool(hit[j]) and i < j
    assert kinds == set(range(5))


def test_block_weights_make_pairs_uniform():
    w = ps.block_weights(N, N_REAL, BLOCK)
    pairs = np.zeros(len(w))
    for lo in range(N_REAL):
        pairs[lo // BLOCK] += N_REAL - 1 - lo
    np.testing.assert_allclose(w, pairs / pairs.sum(), rtol=1e-6)
    with pytest.raises(ValueError, match="n_valid"):
        ps.block_weights(N, 1, BLOCK)


@pytest.mark.parametrize("objective", ["goodput", "attainment", "tardiness"])
def test_chunk_keeps_exact_energies_and_permutations(objective):
    rng = np.random.default_rng(1)
    problem = make_problem(
        rng.integers(1, 300, N_REAL),
        rng.integers(1, 50, N_REAL),
        slo_e2e_ms=rng.uniform(100, 2000, N_REAL),
        size=N,
    )
    model = make_engine_model(4, 256, 2.0, 0.05, 0.003)
    chains = 6
    caps = np.array([4, 4, 4, 2, 2, 2], np.int32)
    models = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (chains,)), model)
    models = models._replace(slots=jnp.asarray(caps))
    params = ps.as_arrays(objective_params(0.0, scale_ms=1e4))
    spec = ps.SearchSpec(objective, False, 4, chains, 2, BLOCK)
    problem = ps.as_arrays(problem)
    init_fn, chunk, _ = ps.compile_programs(spec, N, 8, problem, models, params)
    starts = np.stack(
        [np.concatenate([rng.permutation(N_REAL), np.arange(N_REAL, N)]) for _ in range(chains)]
    ).astype(np.int32)
    state = init_fn(jnp.asarray(starts), problem, models, params, jnp.float32(0))
    e0 = np.asarray(state.best_energy)
    temps = jnp.full((8, chains), 1e-3, jnp.float32)
    probs = jnp.asarray(ps.move_probs(1, 1, 1, 1, 1))
    bp = jnp.asarray(ps.block_weights(N, N_REAL, BLOCK))
    accepted = 0
    for k in range(4):
        state, info = chunk(
            state,
            jax.random.key(k),
            temps,
            probs,
            bp,
            jnp.int32(N_REAL),
            problem,
            models,
            params,
            jnp.float32(0),
        )
        accepted += int(np.sum(info.accepted))
    fn = get_objective(objective)
    for c in range(chains):
        m = model._replace(slots=np.int32(caps[c]))
        for perm, e in (
            (state.perm[c], state.energy[c]),
            (state.best_perm[c], state.best_energy[c]),
        ):
            assert sorted(np.asarray(perm)[:N_REAL]) == list(range(N_REAL))
            assert list(np.asarray(perm)[N_REAL:]) == list(range(N_REAL, N))  # padding stays
            t = simulate(perm, problem, m, max_slots=4, kv=False)
            np.testing.assert_allclose(
                e, fn(t.first_token_ms, t.finish_ms, problem, params), rtol=2e-5, atol=1e-7
            )
    assert accepted > 0 and np.all(np.asarray(state.best_energy) <= e0)


def test_auto_chains_by_device_and_n():
    assert auto_chains(200, "cpu", 2) >= 64 and auto_chains(1000, "cpu", 2) >= 64
    assert auto_chains(200, "gpu") >= 1000 and auto_chains(100_000, "gpu") >= 512
    assert auto_chains(100_000, "cpu", 2) <= 256 and block_for(1000) == 32


def test_plan_reports_the_search_and_never_loses_to_its_best_seed():
    rng = np.random.default_rng(2)
    problem = make_problem(
        rng.integers(1, 300, 40), rng.integers(1, 40, 40), slo_e2e_ms=rng.uniform(100, 1500, 40)
    )
    model = make_engine_model(4, 256, 2.0, 0.05, 0.003)
    r = plan(
        problem,
        model,
        PlanConfig(steps=32, chains=4, descent_share=0.0, polish_rounds=0),
        jax.random.key(0),
    )
    s = r.summary
    assert s.chains == 4 * 2 and s.steps == 32 and s.orders_scored == 32 * 8 * 2
    assert s.compile_s > 0 and s.search_s > 0 and s.anneal_gain >= 0
    assert s.energy <= min(s.seed_energy.values()) + 1e-9
    with pytest.raises(ValueError, match="chains"):
        PlanConfig(chains="many")
    with pytest.raises(ValueError, match="search"):
        PlanConfig(search="greedy")
