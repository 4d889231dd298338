"""SLO metrics: hand-computed cases, missing SLOs, best-effort rows, padding, NumPy == JAX."""

import jax.numpy as jnp
import numpy as np
import pytest

from sajax.metrics import attainment, goodput, slo_metrics

INF = float("inf")
NAN = float("nan")

# Four requests (times in ms from t0):
#   0: first 100, finish 1100, 11 tokens -> tpot 100; e2e SLO 1000           -> miss (e2e)
#   1: first  50, finish  450,  5 tokens -> tpot 100; ttft 60, tpot 120       -> met
#   2: first 300, finish  300,  1 token  -> tpot 0;   ttft 200 (NaN e2e)      -> miss (ttft)
#   3: first  20, finish  920, 10 tokens -> tpot 100; no SLO (best effort)    -> "met", no SLO
FIRST = [100.0, 50.0, 300.0, 20.0]
FINISH = [1100.0, 450.0, 300.0, 920.0]
OUT = [11, 5, 1, 10]
E2E = [1000.0, INF, NAN, INF]
TTFT = [INF, 60.0, 200.0, NAN]
TPOT = [INF, 120.0, INF, INF]


@pytest.mark.parametrize("xp", [np, jnp])
def test_hand_computed(xp):
    m = slo_metrics(FIRST, FINISH, OUT, E2E, TTFT, TPOT, xp=xp)
    np.testing.assert_allclose(m.ttft_ms, FIRST)
    np.testing.assert_allclose(m.e2e_ms, FINISH)
    np.testing.assert_allclose(m.tpot_ms, [100.0, 100.0, 0.0, 100.0])
    np.testing.assert_array_equal(m.met, [False, True, False, True])
    np.testing.assert_array_equal(m.has_slo, [True, True, True, False])
    # attainment over rows with an SLO only: 1 of 3
    assert float(attainment(m.met, m.has_slo, xp=xp)) == pytest.approx(1 / 3)
    # G: hits with an SLO (1) per second of summed e2e of every row (2.77 s)
    assert float(goodput(m.met, m.has_slo, m.e2e_ms, xp=xp)) == pytest.approx(1 / 2.77, rel=1e-6)


def test_weights_and_padding():
    m = slo_metrics(FIRST, FINISH, OUT, E2E, TTFT, TPOT)
    w = [1.0, 3.0, 1.0, 1.0]
    assert attainment(m.met, m.has_slo, w) == pytest.approx(3 / 5)
    assert goodput(m.met, m.has_slo, m.e2e_ms, w) == pytest.approx(3 / 2.77, rel=1e-6)
    # row 0 as padding: gone from attainment and from G's denominator
    mask = [False, True, True, True]
    assert attainment(m.met, m.has_slo, w, mask) == pytest.approx(3 / 4)
    assert goodput(m.met, m.has_slo, m.e2e_ms, w, mask) == pytest.approx(3 / 1.67, rel=1e-6)


def test_slo_boundaries_are_inclusive():
    m = slo_metrics([50.0], [450.0], [5], [450.0], [50.0], [100.0])
    assert bool(m.met[0])
    m = slo_metrics([50.0], [450.0], [5], [449.9], [50.0], [100.0])
    assert not bool(m.met[0])


def test_no_slo_at_all_means_full_attainment_and_zero_goodput():
    m = slo_metrics([1.0, 2.0], [5.0, 6.0], [3, 3], [NAN, INF], [INF, INF], [NAN, NAN])
    assert not m.has_slo.any()
    assert attainment(m.met, m.has_slo) == 1.0
    assert goodput(m.met, m.has_slo, m.e2e_ms) == 0.0


def test_empty_or_all_padding():
    m = slo_metrics([1.0], [2.0], [2], [1.0], [INF], [INF])
    assert goodput(m.met, m.has_slo, m.e2e_ms, mask=[False]) == 0.0
    assert attainment(m.met, m.has_slo, mask=[False]) == 1.0
