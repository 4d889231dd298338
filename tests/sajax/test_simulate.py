"""The fast model against the reference simulator, and its JAX contracts (jit, vmap, padding)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_runner.workloads.synthetic import mix_problem, paper_mix
from sajax.engine_model import make_engine_model
from sajax.metrics import attainment, slo_metrics
from sajax.problem import make_problem
from sajax.profiles import load_profile
from sajax.refsim import reference_simulate
from sajax.simulate import simulate

N_PAD = 64  # one padded size for most tests: one compilation per model structure
sim = simulate  # jitted inside; static sizes come from the concrete model


def random_job(seed, n, max_in=60, max_out=40):
    rng = np.random.default_rng(seed)
    return rng.integers(1, max_in + 1, n), rng.integers(1, max_out + 1, n)


def fast_vs_ref(order, inp, out, model):
    problem = make_problem(inp, out, size=N_PAD)
    full = np.concatenate([order, np.arange(len(inp), N_PAD)])
    t = sim(full, problem, model)
    ref = reference_simulate(order, inp, out, model)
    n = len(inp)
    return t, ref, np.asarray(t.first_token_ms)[:n], np.asarray(t.finish_ms)[:n]


@pytest.mark.parametrize("slots", [1, 3, 8])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("d_ms", [0.0, 0.07])  # with a cost per sampled row, too
def test_exact_when_prompts_fit_the_budget(slots, seed, d_ms):
    inp, out = random_job(seed, 40)
    model = make_engine_model(slots, 10_000, a_ms=2.0, b_ms=0.05, c_ms=0.003, d_ms=d_ms)
    order = np.random.default_rng(seed + 10).permutation(40)
    t, ref, first, finish = fast_vs_ref(order, inp, out, model)
    np.testing.assert_allclose(first, ref.first_token_ms, rtol=2e-5)
    np.testing.assert_allclose(finish, ref.finish_ms, rtol=2e-5)
    assert int(t.n_iterations) == ref.n_iterations


def test_exact_with_kv_capacity_blocking():
    inp, out = random_job(3, 40)
    model = make_engine_model(6, 10_000, 2.0, 0.05, 0.003, kv_capacity=150)
    t, ref, first, finish = fast_vs_ref(np.arange(40), inp, out, model)
    np.testing.assert_allclose(finish, ref.finish_ms, rtol=2e-5)
    np.testing.assert_allclose(first, ref.first_token_ms, rtol=2e-5)


def test_shared_prefill_budget_is_exact_without_decoders():
    # 8 prompts of 30 tokens admitted together with a 64-token budget: they spill over
    # several iterations exactly as the reference packs them.
    inp, out = np.full(8, 30), np.full(8, 5)
    for d_ms in (0.0, 0.3):
        model = make_engine_model(8, 64, 1.0, 0.1, 0.01, d_ms=d_ms)
        t, ref, first, finish = fast_vs_ref(np.arange(8), inp, out, model)
        np.testing.assert_allclose(first, ref.first_token_ms, rtol=1e-5)
        np.testing.assert_allclose(finish, ref.finish_ms, rtol=1e-5)


def test_chunked_prompts_are_close():
    inp, out = random_job(4, 60, max_in=300, max_out=30)
    model = make_engine_model(4, 64, 5.0, 1.0, 0.01)
    t, ref, first, finish = fast_vs_ref(np.arange(60), inp, out, model)
    rel = np.mean(np.abs(finish - ref.finish_ms)) / np.mean(ref.finish_ms)
    assert rel < 0.03


def test_padding_anywhere_changes_nothing():
    inp, out = random_job(5, 20)
    model = make_engine_model(3, 10_000, 2.0, 0.05, 0.003)
    problem = make_problem(inp, out, size=N_PAD)
    order = np.random.default_rng(0).permutation(20)
    tail = np.concatenate([order, np.arange(20, N_PAD)])
    mixed = np.insert(order, [0, 5, 5, 19], [20, 21, 22, 23])
    mixed = np.concatenate([mixed, np.arange(24, N_PAD)])
    a, b = sim(tail, problem, model), sim(mixed, problem, model)
    np.testing.assert_allclose(a.finish_ms, b.finish_ms, rtol=1e-6)
    assert np.all(np.asarray(b.finish_ms)[20:] == 0)


def test_vmap_over_orders_and_models_matches_single_calls():
    inp, out = random_job(6, 30)
    problem = make_problem(inp, out, size=N_PAD)
    base = make_engine_model(4, 10_000, 2.0, 0.05, 0.003)
    keys = jax.random.split(jax.random.key(0), 3)
    orders = jax.vmap(lambda k: jax.random.permutation(k, N_PAD))(keys)
    batched = jax.jit(jax.vmap(simulate, in_axes=(0, None, None)))(orders, problem, base)
    for i in range(3):
        np.testing.assert_allclose(batched.finish_ms[i], sim(orders[i], problem, base).finish_ms)
    caps = jax.tree.map(lambda x: jnp.stack([x, x, x]), base)._replace(
        slots=jnp.array([1, 2, 4], jnp.int32)
    )
    by_cap = jax.jit(jax.vmap(lambda m: simulate(orders[0], problem, m, max_slots=4)))(caps)
    for i, s in enumerate([1, 2, 4]):
        single = sim(orders[0], problem, base._replace(slots=np.int32(s)), max_slots=4)
        np.testing.assert_allclose(by_cap.finish_ms[i], single.finish_ms, rtol=1e-6)
    assert not np.any(by_cap.overflow)


def test_overflow_flag_when_slots_exceed_the_buffer():
    inp, out = random_job(7, 30)
    problem = make_problem(inp, out, size=N_PAD)
    model = make_engine_model(16, 10_000, 2.0, 0.05, 0.003)
    assert bool(simulate(jnp.arange(N_PAD), problem, model, max_slots=8).overflow)
    assert not bool(simulate(jnp.arange(N_PAD), problem, model).overflow)


def test_no_recompile_for_new_orders_or_parameters():
    traces = []

    def counted(order, problem, model):
        traces.append(1)
        return simulate(order, problem, model, max_slots=8, kv=True)

    f = jax.jit(counted)
    inp, out = random_job(8, 30)
    problem = make_problem(inp, out, size=N_PAD)
    for s in (2, 5):
        model = make_engine_model(s, 100, 1.0 + s, 0.1, 0.01, kv_capacity=500)
        f(jnp.asarray(np.random.default_rng(s).permutation(N_PAD)), problem, model)
    assert len(traces) == 1


def test_paper_mix_fidelity_and_attainment():
    n = 300
    model = load_profile("gpu-7b-a100")
    cols = paper_mix(n, seed=1, tightness=0.55, model=model)
    problem = mix_problem(cols)
    order = np.random.default_rng(2).permutation(n)
    full = np.concatenate([order, np.arange(n, len(problem.mask))])
    t = simulate(jnp.asarray(full), problem, model)
    ref = reference_simulate(order, cols["input_len"], cols["output_len"], model)
    fast = np.asarray(t.finish_ms)[:n]
    assert np.mean(np.abs(fast - ref.finish_ms)) / np.mean(ref.finish_ms) < 0.03

    def att(first, finish):
        m = slo_metrics(
            first,
            finish,
            cols["output_len"],
            cols["slo_e2e_ms"],
            cols["slo_ttft_ms"],
            cols["slo_tpot_ms"],
        )
        return float(attainment(m.met, m.has_slo))

    assert (
        abs(att(np.asarray(t.first_token_ms)[:n], fast) - att(ref.first_token_ms, ref.finish_ms))
        <= 0.01
    )


def test_kv_can_bind():
    from sajax.simulate import kv_can_bind

    problem = make_problem([10, 20, 30], [5, 5, 5])
    assert not kv_can_bind(problem, make_engine_model(2, 100, 1.0, 0.1, kv_capacity=0))
    assert not kv_can_bind(problem, make_engine_model(2, 100, 1.0, 0.1, kv_capacity=60))
    assert kv_can_bind(problem, make_engine_model(2, 100, 1.0, 0.1, kv_capacity=59))


def test_long_job_keeps_float32_precision():
    # ~100k iterations with chunked prompts: float32 sums of global-t polynomials would drift
    n = 1500
    model = load_profile("cpu-smollm2-135m")
    cols = paper_mix(n, seed=2, model=model)
    problem = make_problem(cols["input_len"], cols["output_len"])
    order = np.arange(len(problem.mask))
    t = simulate(order, problem, model)
    ref = reference_simulate(order[:n], cols["input_len"], cols["output_len"], model)
    assert ref.n_iterations > 90_000 and int(t.n_iterations) == ref.n_iterations
    np.testing.assert_allclose(np.asarray(t.finish_ms)[:n], ref.finish_ms, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(t.first_token_ms)[:n], ref.first_token_ms, rtol=1e-4)
