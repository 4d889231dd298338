"""Statistical quality on OR-Library wt40 instances (fixed key, tolerance on the optimum count).

Reads the instances from ../shared/benchmarks/orlib-wt (relative to the repository root); skips
when that folder is absent.
"""

from pathlib import Path

import jax
import numpy as np
import pytest

import sajax
from sajax.objectives.weighted_tardiness import weighted_tardiness_numpy

ORLIB = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "orlib-wt"
pytestmark = pytest.mark.skipif(
    not (ORLIB / "wt40.txt").exists(), reason=f"OR-Library instances not found at {ORLIB}"
)
INSTANCES = [0, 13, 24, 49, 74, 99]  # 0-based rows of wt40.txt; a spread of due-date classes


def load(size, rows):
    numbers = np.array((ORLIB / f"wt{size}.txt").read_text().split(), dtype=np.int64)
    blocks = numbers.reshape(-1, 3, size)[rows]
    optima = np.array((ORLIB / f"wtopt{size}.txt").read_text().split(), dtype=np.int64)[rows]
    return blocks[:, 0], blocks[:, 1], blocks[:, 2], optima


@pytest.mark.parametrize(
    "incremental, proposals, steps", [(False, 1, 4000), (True, 4, 1500)], ids=["full", "delta"]
)
def test_wt40_handful_reaches_the_optimum(incremental, proposals, steps):
    p, w, d, optima = load(40, INSTANCES)
    energy_fn, data = sajax.objectives.weighted_tardiness(p, w, d, incremental=incremental)
    result = sajax.anneal_many(
        energy_fn,
        jax.random.key(0),
        40,
        data,
        chains=32,
        steps=steps,
        chunk_size=500,
        proposals=proposals,
    )
    exact = np.array(
        [weighted_tardiness_numpy(result.best_perm[b], p[b], w[b], d[b]) for b in range(len(p))]
    )
    np.testing.assert_array_equal(exact, result.best_energy)
    assert np.all(exact >= optima), "below a proven optimum: the energy is wrong"
    gap = (exact - optima) / np.maximum(optima, 1)
    assert np.sum(exact == optima) >= len(INSTANCES) - 1, f"gaps {gap}"
    assert gap.max() < 0.01, f"gaps {gap}"
