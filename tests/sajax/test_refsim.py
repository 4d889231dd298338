"""The reference simulator: hand-computed iterations, admission rules, invariants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sajax.engine_model import make_engine_model
from sajax.profiles import load_profile
from sajax.refsim import ContinuousBatchSim, reference_simulate


def model(**kw):
    base = dict(slots=2, token_budget=100, a_ms=1.0, b_ms=0.1, c_ms=0.01, kv_capacity=0)
    return make_engine_model(**{**base, **kw})


def run_steps(sim):
    """Step to idle; every iteration's result."""
    out = []
    while True:
        it = sim.step()
        if it.idle:
            return out
        out.append(it)


def test_one_request_by_hand():
    # prefill 10 tokens (ctx 10), then decode steps with ctx 11 and 12
    ref = reference_simulate([0], [10], [3], model(slots=1))
    first = 1 + 0.1 * 10 + 0.01 * 10
    assert ref.first_token_ms[0] == pytest.approx(first)
    assert ref.finish_ms[0] == pytest.approx(first + (1.1 + 0.11) + (1.1 + 0.12))
    assert ref.n_iterations == 3


def test_output_of_one_finishes_with_its_prefill():
    ref = reference_simulate([0], [7], [1], model())
    assert ref.first_token_ms[0] == ref.finish_ms[0] == pytest.approx(1 + 0.7 + 0.07)


def test_chunked_prefill_by_hand():
    # budget 4: chunks 4, 4, 2 attending 4, 8, 10 tokens
    ref = reference_simulate([0], [10], [1], model(token_budget=4))
    assert ref.first_token_ms[0] == pytest.approx(3 * 1 + 0.1 * 10 + 0.01 * (4 + 8 + 10))


def test_decode_tokens_come_before_prompt_chunks():
    # A (2 in, 5 out) and B (5 in, 1 out) with a budget of 3 tokens per iteration:
    # it0: A 2 + B 1; it1: A decode + B 2; it2: A decode + B 2 -> B done at it2.
    sim = ContinuousBatchSim(model(token_budget=3))
    sim.submit("A", 2, 5)
    sim.submit("B", 5, 1)
    its = run_steps(sim)
    assert [it.forward_tokens for it in its[:3]] == [3, 3, 3]
    assert its[0].first_token == ["A"]
    assert its[2].first_token == ["B"] and its[2].finished == ["B"]
    assert its[-1].finished == ["A"] and len(its) == 5
    # context of it1: A decodes with 2 + 1, B's chunk brings it to 1 + 2
    assert its[1].context_tokens == 3 + 3


def test_slots_bound_and_fifo_admission():
    sim = ContinuousBatchSim(model(slots=1))
    for rid, out in (("a", 3), ("b", 1), ("c", 2)):
        sim.submit(rid, 4, out)
    its = run_steps(sim)
    finished = [rid for it in its for rid in it.finished]
    assert finished == ["a", "b", "c"]
    assert all(it.batch_size <= 1 for it in its)


def test_kv_head_of_line_blocking():
    # capacity 100: A (60) runs; B (50) does not fit and blocks C (10) although C would fit.
    sim = ContinuousBatchSim(model(slots=3, kv_capacity=100))
    sim.submit("A", 30, 30)
    sim.submit("B", 25, 25)
    sim.submit("C", 5, 5)
    its = run_steps(sim)
    assert its[0].first_token == ["A"] and its[0].batch_size == 1
    a_done = next(i for i, it in enumerate(its) if "A" in it.finished)
    assert sorted(its[a_done + 1].first_token) == ["B", "C"]  # both admitted once A leaves


def test_request_larger_than_kv_runs_alone():
    sim = ContinuousBatchSim(model(slots=4, kv_capacity=50))
    sim.submit("small", 5, 5)
    sim.submit("huge", 60, 10)
    sim.submit("after", 5, 5)
    its = run_steps(sim)
    huge = [it for it in its if it.batch_size and "huge" in it.first_token]
    assert huge and huge[0].batch_size == 1
    order = [rid for it in its for rid in it.finished]
    assert order == ["small", "huge", "after"]


def test_idle_step_and_clock_jump():
    sim = ContinuousBatchSim(model())
    it = sim.step()
    assert it.idle and it.t_end_ms == 0.0 and sim.idle
    sim.advance_to(500.0)
    sim.submit("x", 3, 2)
    it = sim.step()
    assert not it.idle and it.t_start_ms == 500.0 and it.first_token == ["x"]
    with pytest.raises(RuntimeError):
        sim.advance_to(10_000.0)
    assert sim.running == 1 and sim.queued == 0


def test_rejects_bad_requests_and_orders():
    sim = ContinuousBatchSim(model())
    with pytest.raises(ValueError):
        sim.submit("x", 0, 3)
    with pytest.raises(ValueError):
        reference_simulate([0, 0], [1, 1], [1, 1], model())


def test_times_indexed_by_request_and_nan_when_not_run():
    ref = reference_simulate([2, 0], [5, 5, 5], [4, 4, 4], model(slots=1))
    assert np.isnan(ref.finish_ms[1])
    assert ref.finish_ms[2] < ref.first_token_ms[0]


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30)), min_size=1, max_size=25),
    slots=st.integers(1, 5),
    budget=st.integers(1, 50),
    kv=st.sampled_from([0, 40, 120]),
)
def test_advance_equals_stepping_and_conserves_tokens(lengths, slots, budget, kv):
    m = model(slots=slots, token_budget=budget, kv_capacity=kv)
    inp = np.array([x for x, _ in lengths])
    out = np.array([y for _, y in lengths])
    stepped = ContinuousBatchSim(m)
    for i, (x, y) in enumerate(lengths):
        stepped.submit(i, x, y)
    its = run_steps(stepped)
    first = {rid: it.t_end_ms for it in its for rid in it.first_token}
    finish = {rid: it.t_end_ms for it in its for rid in it.finished}
    ref = reference_simulate(np.arange(len(lengths)), inp, out, m)
    np.testing.assert_allclose(ref.first_token_ms, [first[i] for i in range(len(inp))], rtol=1e-9)
    np.testing.assert_allclose(ref.finish_ms, [finish[i] for i in range(len(inp))], rtol=1e-9)
    assert ref.n_iterations == len(its)
    # every prompt token is prefilled once; every output token but the first is a decode token
    assert sum(it.forward_tokens for it in its) == inp.sum() + (out - 1).sum()
    assert all(it.batch_size <= slots and it.forward_tokens <= max(budget, slots) for it in its)
    assert all(ref.first_token_ms <= ref.finish_ms)


def test_thousand_requests_is_fast():
    import time

    rng = np.random.default_rng(0)
    n = 1000
    inp = rng.integers(10, 400, n)
    out = rng.integers(1, 680, n)  # mean ~340
    t0 = time.perf_counter()
    ref = reference_simulate(np.arange(n), inp, out, load_profile("gpu-7b-a100"))
    assert time.perf_counter() - t0 < 10.0  # ~0.15 s on an idle 2-core machine
    assert np.all(np.isfinite(ref.finish_ms))
