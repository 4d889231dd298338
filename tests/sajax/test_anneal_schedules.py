"""Temperature schedules and the automatic range."""

import numpy as np
import pytest

from sajax.schedules import auto_range, constant, geometric, ladder, linear


def test_geometric_and_linear_endpoints_and_monotone():
    steps = np.arange(100)[:, None]
    for make in (geometric, linear):
        temps = make(np.array([50.0, 8.0]), np.array([0.5, 0.1]), 100)(steps)
        assert temps.shape == (100, 2)
        np.testing.assert_allclose(temps[0], [50.0, 8.0])
        np.testing.assert_allclose(temps[-1], [0.5, 0.1])
        assert np.all(np.diff(temps, axis=0) < 0)
    geo = geometric(100.0, 1.0, 3)(np.arange(3))
    np.testing.assert_allclose(geo, [100.0, 10.0, 1.0])  # constant ratio
    with pytest.raises(ValueError):
        geometric(0.0, 1.0, 10)


def test_constant_and_ladder():
    assert constant(3.0)(np.arange(4)[:, None]).shape == (4, 1)
    rungs = ladder(5, 16.0)
    np.testing.assert_allclose(rungs, [1, 2, 4, 8, 16])
    assert ladder(1, 16.0).tolist() == [1.0]


def test_auto_range_uses_the_small_uphill_moves():
    deltas = np.array([[-5.0, 0.0, np.nan, np.inf] + list(range(1, 101))])
    t0, t1 = auto_range(deltas, start=0.1, end=0.003, quantile=0.1)
    q = np.quantile(np.arange(1, 101), 0.1)  # downhill, zero and non-finite are ignored
    np.testing.assert_allclose(t0, [0.1 * q])
    np.testing.assert_allclose(t1, [0.003 * q])
    t0, t1 = auto_range(np.zeros((2, 8)))  # no uphill move at all: scale 1
    np.testing.assert_allclose(t0, [0.1, 0.1])
