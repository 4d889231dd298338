"""The driver: results are consistent, deterministic, controllable, and compile once per shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sajax
from sajax.objectives import weighted_tardiness

N, CHAINS, CHUNK = 10, 8, 64
OPTS = dict(chains=CHAINS, chunk_size=CHUNK)


def instance(seed):
    rng = np.random.default_rng(seed)
    return weighted_tardiness(rng.integers(1, 20, N), rng.integers(1, 5, N), rng.integers(0, 80, N))


ENERGY, DATA = instance(0)


def check_consistent(result, energy_fn=ENERGY, data=DATA):
    """Permutations everywhere; every cached energy equals its recomputed energy."""
    for perms in (result.best_perm[None], result.chain_best_perm, result.final_perm):
        assert np.all(np.sort(perms, axis=-1) == np.arange(N))
    recompute = jax.vmap(lambda p: energy_fn(p, data))
    np.testing.assert_array_equal(recompute(result.final_perm), result.final_energy)
    np.testing.assert_array_equal(recompute(result.chain_best_perm), result.chain_best_energy)
    assert result.best_energy == energy_fn(result.best_perm, data)
    assert result.best_energy == result.chain_best_energy.min()
    assert np.all(np.diff(result.history.best_energy) <= 0), "best never rises"


def test_result_is_consistent_and_deterministic():
    a = sajax.anneal(ENERGY, jax.random.key(0), N, data=DATA, steps=300, **OPTS)
    b = sajax.anneal(ENERGY, jax.random.key(0), N, data=DATA, steps=300, **OPTS)
    check_consistent(a)
    assert a.steps == 300 and a.chunks == 5 and a.stop_reason == "steps"
    assert a.proposed.shape == (CHAINS,) and np.all(a.proposed == 300)
    for field in ("best_perm", "best_energy", "final_perm", "accepted"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.history.best_energy, b.history.best_energy)


def test_force_accept_and_force_reject():
    """T = inf accepts every move; T = 0 from the unique optimum accepts none."""
    hot = sajax.anneal(
        ENERGY, jax.random.key(1), N, data=DATA, steps=100, schedule=sajax.constant(jnp.inf), **OPTS
    )
    assert np.all(hot.acceptance_rate == 1.0)

    def weighted_position(perm):  # unique minimum at the identity (rearrangement inequality)
        return -jnp.sum(jnp.arange(N) * perm).astype(jnp.float32)

    identity = np.arange(N)
    cold = sajax.anneal(
        weighted_position,
        jax.random.key(2),
        N,
        steps=100,
        init_perms=np.tile(identity, (CHAINS, 1)),
        schedule=sajax.constant(0.0),
        **OPTS,
    )
    assert np.all(cold.accepted == 0)
    assert np.all(cold.final_perm == identity)


def test_seeds_are_used_and_validated():
    seeds = np.stack([np.arange(N), np.arange(N)[::-1]])
    r = sajax.anneal(ENERGY, jax.random.key(3), N, data=DATA, steps=0, init_perms=seeds, **OPTS)
    np.testing.assert_array_equal(r.final_perm[:2], seeds)
    with pytest.raises(ValueError, match="permutation"):
        sajax.anneal(ENERGY, jax.random.key(3), N, data=DATA, init_perms=np.zeros(N), **OPTS)
    with pytest.raises(ValueError, match="chains"):
        sajax.anneal(
            ENERGY, jax.random.key(3), N, data=DATA, init_perms=np.tile(seeds, (5, 1)), **OPTS
        )


def test_padding_positions_never_move():
    r = sajax.anneal(ENERGY, jax.random.key(4), N, data=DATA, steps=200, n_valid=6, **OPTS)
    assert np.all(r.final_perm[:, 6:] == np.arange(6, N))
    assert np.all(r.chain_best_perm[:, 6:] == np.arange(6, N))


def test_stop_rules_and_progress_callback():
    seen = []

    def callback(progress):
        seen.append(progress)
        return progress.chunk == 2

    r = sajax.anneal(ENERGY, jax.random.key(5), N, data=DATA, steps=1000, callback=callback, **OPTS)
    assert r.stop_reason == "callback" and r.chunks == 2 and r.steps == 2 * CHUNK
    assert [p.steps_done for p in seen] == [CHUNK, 2 * CHUNK]
    assert seen[-1].best_energy == r.best_energy and seen[-1].steps_total == 1000

    r = sajax.anneal(ENERGY, jax.random.key(5), N, data=DATA, steps=1000, time_budget_s=0.0, **OPTS)
    assert r.stop_reason == "time_budget" and r.chunks == 1

    loose = float(r.best_energy) * 10 + 1
    r = sajax.anneal(
        ENERGY, jax.random.key(5), N, data=DATA, steps=1000, target_energy=loose, **OPTS
    )
    assert r.stop_reason == "target" and r.best_energy <= loose


class _TickClock:
    """A stand-in for ``time`` in ``sajax.anneal``: every ``perf_counter()`` call is one second
    later than the one before."""

    def __init__(self):
        self.now = -1.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_time_budget_stops_before_a_chunk_that_would_end_past_it(monkeypatch):
    import sys

    clock = _TickClock()
    monkeypatch.setattr(sys.modules["sajax.anneal_driver"], "time", clock)
    # clock: start 0, then 1 before chunk 1; chunks end at 2, 3, 4, ... Chunk 1's time is not
    # used (compilation); after chunk 2, elapsed 3 + a 1-tick chunk reaches a budget of 3.5:
    # stop there, where the old rule (elapsed >= budget) ran a third chunk.
    r = sajax.anneal(ENERGY, jax.random.key(5), N, data=DATA, steps=1000, time_budget_s=3.5, **OPTS)
    assert r.stop_reason == "time_budget" and r.chunks == 2
    clock.now = -1.0
    r = sajax.anneal(ENERGY, jax.random.key(5), N, data=DATA, steps=1000, time_budget_s=4.5, **OPTS)
    assert r.stop_reason == "time_budget" and r.chunks == 3


def test_restarts_and_replica_exchange_keep_the_state_consistent():
    r = sajax.anneal(
        ENERGY,
        jax.random.key(6),
        N,
        data=DATA,
        steps=640,
        restart_patience=1,
        ladder_ratio=30.0,
        exchange=True,
        **OPTS,
    )
    check_consistent(r)
    assert r.restarts.sum() > 0 and r.exchanges.sum() > 0


def test_energy_without_data():
    target = jnp.asarray(np.random.default_rng(1).permutation(N))

    def distance(perm):
        return jnp.sum(jnp.abs(perm - target)).astype(jnp.float32)

    r = sajax.anneal(distance, jax.random.key(7), N, steps=1000, **OPTS)
    assert r.best_energy == 0 and np.array_equal(r.best_perm, target)


def test_anneal_many_solves_each_instance_with_its_own_data():
    fns, datas = zip(*(instance(s) for s in range(3)), strict=True)
    batched = jax.tree.map(lambda *x: jnp.stack(x), *datas)
    r = sajax.anneal_many(ENERGY, jax.random.key(8), N, batched, steps=300, **OPTS)
    assert r.best_perm.shape == (3, N) and r.chain_best_energy.shape == (3, CHAINS)
    for b in range(3):
        assert r.best_energy[b] == ENERGY(r.best_perm[b], datas[b])
        fields = {f: getattr(r, f)[b] for f in ("best_perm", "best_energy", "final_perm")}
        fields.update({f: getattr(r, f)[b] for f in ("final_energy", "chain_best_perm")})
        fields["chain_best_energy"] = r.chain_best_energy[b]
        history = r.history._replace(best_energy=r.history.best_energy[:, b])
        check_consistent(r._replace(**fields, history=history), data=datas[b])


def test_no_recompilation_for_new_data_temperatures_steps_seeds_or_keys():
    traces = []

    def counted(perm, data):
        traces.append(1)  # runs once per trace, never at execution
        return ENERGY(perm, data)

    _, other = instance(11)
    sajax.anneal(counted, jax.random.key(0), N, data=DATA, steps=100, **OPTS)
    first = len(traces)
    assert first > 0
    sajax.anneal(counted, jax.random.key(1), N, data=other, steps=37, **OPTS)  # auto range again
    sajax.anneal(
        counted,
        jax.random.key(2),
        N,
        data=other,
        steps=250,
        schedule=sajax.geometric(100.0, 0.5, 250),
        init_perms=np.arange(N)[None],
        n_valid=7,
        moves=sajax.move_mix(1, 0, 0),
        time_budget_s=100.0,
        restart_patience=2,
        exchange=True,
        ladder_ratio=4.0,
        **OPTS,
    )
    assert len(traces) == first, "a second call with the same shapes must not retrace"
