"""Temperature schedules (``step -> temperature`` functions) and the automatic temperature range.

A schedule maps a step index (a NumPy or JAX array of ints) to a temperature; its parameters may
be arrays (e.g. one start temperature per instance) that broadcast against the step. The driver
evaluates the schedule on the host for a whole chunk and passes the temperatures to the jitted
chunk as an array, so a new temperature range or step count never recompiles. It calls the
schedule with an (L, 1) array of steps, so (B,) parameters give (L, B) temperatures.

    geometric:  T(s) = T0 * (T1 / T0) ** (s / (steps - 1))          (the default)
    linear:     T(s) = T0 + (T1 - T0) * s / (steps - 1)
    constant:   T(s) = T0

Automatic range (warm-up). The temperatures that matter are those at which the search moves
between good solutions, so the range is measured there: every chain first descends greedily
(T = 0) for a chunk, then samples the energy change ``delta`` of random moves from where it
stopped. With ``delta_q`` the ``quantile``-th (default 10%) smallest uphill change,

    T0 = start * delta_q,      T1 = end * delta_q        (defaults start = 0.1, end = 0.003)

i.e. colder than textbook rules: that small uphill move is accepted with probability
exp(-10) ~ 5e-5 at the start and practically never at the end; the search travels mostly through
zero-cost and smaller moves (weighted tardiness has large plateaus).
(The defaults were tuned on OR-Library weighted tardiness: benchmarks/results/anneal.md. A
mean-acceptance rule such as Ben-Ameur's, measured on random permutations, gave start
temperatures 10-100x too hot there.)

A ladder multiplies the schedule per chain (parallel tempering): ``ladder(c, r)`` is geometric
from 1 to ``r`` over ``c`` chains.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Schedule = Callable[[np.ndarray], np.ndarray]


def geometric(t_start, t_end, steps: int) -> Schedule:
    """Geometric cooling from ``t_start`` at step 0 to ``t_end`` at step ``steps - 1``."""
    t_start, t_end = np.asarray(t_start, np.float64), np.asarray(t_end, np.float64)
    if np.any(t_start <= 0) or np.any(t_end <= 0):
        raise ValueError("geometric cooling needs temperatures > 0")
    last = max(int(steps) - 1, 1)

    def schedule(step):
        frac = np.clip(np.asarray(step, np.float64) / last, 0.0, 1.0)
        return t_start * (t_end / t_start) ** frac

    return schedule


def linear(t_start, t_end, steps: int) -> Schedule:
    """Linear cooling from ``t_start`` at step 0 to ``t_end`` at step ``steps - 1``."""
    t_start, t_end = np.asarray(t_start, np.float64), np.asarray(t_end, np.float64)
    last = max(int(steps) - 1, 1)

    def schedule(step):
        frac = np.clip(np.asarray(step, np.float64) / last, 0.0, 1.0)
        return t_start + (t_end - t_start) * frac

    return schedule


def constant(temperature) -> Schedule:
    """The same temperature at every step (0 = greedy descent, inf = random walk)."""
    temperature = np.asarray(temperature, np.float64)

    def schedule(step):
        return np.broadcast_to(temperature, np.broadcast_shapes(np.shape(step), temperature.shape))

    return schedule


def ladder(chains: int, ratio: float) -> np.ndarray:
    """(chains,) temperature multipliers, geometric from 1 to ``ratio`` (parallel tempering)."""
    if chains == 1:
        return np.ones(1)
    return ratio ** (np.arange(chains) / (chains - 1))


def auto_range(
    deltas: np.ndarray, start: float = 0.1, end: float = 0.003, quantile: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(T0, T1) = (start, end) * the ``quantile``-th smallest uphill move in ``deltas`` (..., k).

    Non-positive and non-finite entries are ignored; a row with no uphill move gets scale 1.
    """
    deltas = np.asarray(deltas, np.float64)
    up = np.where(np.isfinite(deltas) & (deltas > 0), deltas, np.nan)
    has_up = np.any(~np.isnan(up), axis=-1)
    safe = np.where(has_up[..., None], up, 1.0)
    scale = np.where(has_up, np.nanquantile(safe, quantile, axis=-1), 1.0)
    return start * scale, end * scale
