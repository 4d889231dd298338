"""Incremental scoring (sajax.sim_incremental) equals a full simulate, for every move and SLO."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sajax.engine_model import make_engine_model
from sajax.moves import INSERT, REVERSE, SWAP, apply_move
from sajax.objectives.slo import OBJECTIVES, objective_params
from sajax.problem import make_problem
from sajax.sim_incremental import init_cache, score_from_block
from sajax.simulate import simulate

N = 80  # padded size (the last rows are padding)
N_REAL = 70
BLOCK = 8
S_MAX = 8


def _problem(seed):
    rng = np.random.default_rng(seed)
    inp = rng.integers(1, 400, N_REAL)
    out = rng.integers(1, 60, N_REAL)
    kinds = rng.integers(0, 3, N_REAL)  # one SLO kind per row: e2e, ttft or tpot
    e2e = np.where(kinds == 0, rng.uniform(50, 3000, N_REAL), np.inf)
    ttft = np.where(kinds == 1, rng.uniform(20, 1500, N_REAL), np.inf)
    tpot = np.where(kinds == 2, rng.uniform(5, 40, N_REAL), np.inf)
    return make_problem(inp, out, e2e, ttft, tpot, size=N)


MODELS = {
    "no_kv": make_engine_model(6, 256, 2.0, 0.05, 0.003),
    "kv": make_engine_model(6, 256, 2.0, 0.05, 0.003, kv_capacity=900),
}

_init = jax.jit(init_cache, static_argnums=(3, 4, 5))
_score = jax.jit(score_from_block, static_argnums=(5, 6, 7))


@pytest.mark.parametrize("kv", ["no_kv", "kv"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moves_scored_from_a_checkpoint_equal_a_full_simulate(kv, seed):
    model, problem = MODELS[kv], _problem(seed)
    use_kv = kv == "kv"
    rng = np.random.default_rng(100 + seed)
    base = np.concatenate([rng.permutation(N_REAL), np.arange(N_REAL, N)]).astype(np.int32)
    cache = _init(jnp.asarray(base), problem, model, S_MAX, use_kv, BLOCK)
    params = objective_params(0.0, scale_ms=1e4)
    models = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (1,)), model)
    blocked = 0
    for _ in range(12):
        kind = int(rng.choice([SWAP, INSERT, REVERSE]))
        i, j = rng.choice(N_REAL, 2, replace=False)
        moved = apply_move(jnp.asarray(base), kind, i, j)
        b = min(i, j) // BLOCK
        batch = jax.tree.map(lambda x: x[None], cache)
        t, new_cache = _score(
            jnp.int32(b), moved[None], batch, problem, models, S_MAX, use_kv, BLOCK
        )
        full = simulate(moved, problem, model, max_slots=S_MAX, kv=use_kv)
        for name in ("admit_iter", "first_iter", "finish_iter"):  # the schedule: exact
            np.testing.assert_array_equal(np.asarray(getattr(t, name)[0]), getattr(full, name))
        np.testing.assert_allclose(t.first_token_ms[0], full.first_token_ms, rtol=1e-6)
        np.testing.assert_allclose(t.finish_ms[0], full.finish_ms, rtol=1e-6)
        for fn in OBJECTIVES.values():
            e_inc = fn(t.first_token_ms[0], t.finish_ms[0], problem, params)
            e_full = fn(full.first_token_ms, full.finish_ms, problem, params)
            np.testing.assert_allclose(e_inc, e_full, rtol=1e-5, atol=1e-7)
        # the new cache is the cache of the moved order: chain moves on it
        fresh = _init(moved, problem, model, S_MAX, use_kv, BLOCK)
        for a, c in zip(jax.tree.leaves(new_cache), jax.tree.leaves(fresh), strict=True):
            np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(c))
        base, cache = np.asarray(moved), fresh
        blocked += int(np.any(np.asarray(full.admit_iter) > 0))
    assert blocked > 0  # the slots were contended: admissions waited


def test_kv_capacity_changes_the_schedule_in_the_property_instances():
    # the "kv" cases test the KV path only if the capacity binds there
    problem = _problem(0)
    order = np.arange(N, dtype=np.int32)
    a = simulate(order, problem, MODELS["kv"], max_slots=S_MAX, kv=True)
    b = simulate(order, problem, MODELS["no_kv"], max_slots=S_MAX, kv=False)
    assert np.any(np.asarray(a.admit_iter) != np.asarray(b.admit_iter))
