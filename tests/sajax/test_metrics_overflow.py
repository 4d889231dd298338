"""Weighted metrics with huge weights: finite, and equal to the same weights scaled down."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from sajax.metrics import attainment, goodput, slo_metrics

FIRST, FINISH, OUT = [100.0, 50.0, 300.0, 20.0], [1100.0, 450.0, 300.0, 920.0], [11, 5, 1, 10]
E2E = [1000.0, 500.0, 400.0, float("nan")]  # met: no, yes, yes; row 3 best-effort


@pytest.mark.parametrize(
    "weights",
    [[1e300] * 4, [1.0, 1.0, 1e300, 1.0], [1.7e308] * 4, [1e-300, 2e-300, 1e-300, 1e-300]],
)
def test_any_finite_weights_give_finite_metrics_without_warnings(weights):
    m = slo_metrics(FIRST, FINISH, OUT, E2E, [np.inf] * 4, [np.inf] * 4)
    scale = max(weights)
    small = [w / scale for w in weights]  # the same ratios, in an ordinary range
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "overflow encountered in cast" was the first symptom
        a = float(attainment(m.met, m.has_slo, weights))
        g = float(goodput(m.met, m.has_slo, m.e2e_ms, weights))
    assert np.isfinite(a) and 0.0 <= a <= 1.0
    assert a == pytest.approx(float(attainment(m.met, m.has_slo, small)), rel=1e-12)
    g_small = float(goodput(m.met, m.has_slo, m.e2e_ms, small))
    assert g == pytest.approx(g_small * scale, rel=1e-6)
    assert np.isfinite(g) or g_small * scale > np.finfo(np.float64).max


def test_numpy_and_jax_agree_within_the_contracts_weight_range():
    weights = [1e6, 1e-6, 3.0, 1.0]
    m = slo_metrics(FIRST, FINISH, OUT, E2E, [np.inf] * 4, [np.inf] * 4)
    for fn, args in ((attainment, ()), (goodput, (m.e2e_ms,))):
        on_np = float(fn(m.met, m.has_slo, *args, weights))
        on_jax = float(fn(jnp.asarray(m.met), jnp.asarray(m.has_slo), *args, weights, xp=jnp))
        assert on_np == pytest.approx(on_jax, rel=1e-5)
