"""Heuristic orders and alone-times."""

import jax
import numpy as np
import pytest

from sajax import heuristics
from sajax.engine_model import make_engine_model
from sajax.problem import make_problem
from sajax.profiles import load_profile
from sajax.refsim import reference_simulate

INF = float("inf")
NAN = float("nan")


@pytest.fixture
def problem():
    # rows: 0 e2e 500 | 1 ttft 50 | 2 none | 3 e2e 100, ttft 400 | 4 tpot only | 5 e2e 100 (tie)
    return make_problem(
        input_len=[10, 200, 30, 5, 1000, 40],
        output_len=[50, 3, 100, 20, 7, 1],
        slo_e2e_ms=[500, None, NAN, 100, None, 100],
        slo_ttft_ms=[None, 50, None, 400, None, None],
        slo_tpot_ms=[None, None, None, None, 30, None],
    )


MODEL = make_engine_model(slots=4, token_budget=64, a_ms=5.0, b_ms=0.5, c_ms=0.01)


@pytest.mark.parametrize("name", sorted(heuristics.HEURISTICS))
def test_orders_are_permutations_with_padding_last(problem, name):
    order = np.asarray(heuristics.HEURISTICS[name](problem, MODEL))
    assert order.dtype == np.int32
    assert sorted(order) == list(range(len(problem.mask)))
    assert set(order[:6]) == set(range(6))  # the real rows first
    jitted = jax.jit(heuristics.HEURISTICS[name])(problem, MODEL)
    np.testing.assert_array_equal(jitted, order)


def test_fcfs_is_file_order(problem):
    np.testing.assert_array_equal(heuristics.fcfs(problem), np.arange(len(problem.mask)))


def test_edf_by_tightest_deadline_ties_in_file_order_no_slo_last(problem):
    order = np.asarray(heuristics.edf(problem))[:6]
    # deadlines: 500, 50, inf, 100, inf (tpot only), 100
    assert list(order) == [1, 3, 5, 0, 2, 4]


def test_sjf_sorts_by_alone_e2e(problem):
    order = np.asarray(heuristics.sjf(problem, MODEL))[:6]
    e2e = np.asarray(heuristics.alone_time(problem, MODEL).e2e_ms)
    assert np.all(np.diff(e2e[order]) >= 0)


def test_least_slack(problem):
    order = np.asarray(heuristics.least_slack(problem, MODEL))[:6]
    t = heuristics.alone_time(problem, MODEL)
    e2e, ttft = np.asarray(t.e2e_ms), np.asarray(t.ttft_ms)
    slo_e2e, slo_ttft = np.asarray(problem.slo_e2e_ms), np.asarray(problem.slo_ttft_ms)
    slack = np.minimum(slo_e2e - e2e, slo_ttft - ttft)[:6]
    assert list(slack[order]) == sorted(slack)
    assert set(order[-2:]) == {2, 4}  # no deadline


@pytest.mark.parametrize("profile", ["gpu-7b-a100", "cpu-smollm2-135m"])
def test_alone_time_equals_the_reference_alone(profile):
    model = load_profile(profile)
    inp = np.array([1, 7, 511, 512, 513, 1500, 8320, 9000])
    out = np.array([1, 2, 9, 1, 30, 3, 4, 2])
    t = heuristics.alone_time(make_problem(inp, out), model)
    for i in range(len(inp)):
        ref = reference_simulate([0], [inp[i]], [out[i]], model)
        assert float(t.ttft_ms[i]) == pytest.approx(ref.first_token_ms[0], rel=1e-5)
        assert float(t.e2e_ms[i]) == pytest.approx(ref.finish_ms[0], rel=1e-5)
        tpot = (ref.finish_ms[0] - ref.first_token_ms[0]) / max(out[i] - 1, 1)
        assert float(t.tpot_ms[i]) == pytest.approx(tpot, rel=1e-4, abs=1e-6)


def test_hopeless(problem):
    model = make_engine_model(slots=4, token_budget=64, a_ms=5.0, b_ms=0.5, c_ms=0.01)
    t = heuristics.alone_time(problem, model)
    miss = np.asarray(heuristics.hopeless(problem, model))
    # row 3: e2e SLO 100 but 20 tokens take more than 19 * 5 ms alone; padding never hopeless
    assert miss[3] and float(t.e2e_ms[3]) > 100
    assert not miss[2] and not miss[6:].any()
    assert miss[1] == (float(t.ttft_ms[1]) > 50)
