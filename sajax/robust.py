"""Output-length scenarios for robust planning.

The planner knows a *predicted* output length ``L_i`` per request, not the actual one. Robust
mode scores an order against ``K`` sampled scenarios instead of the point estimate: scenario
``k`` draws every length independently from a log-normal around the prediction,

    L_ik = clip(round(L_i * exp(sigma * z_ik - sigma^2 / 2)), 1, max_len_i),   z_ik ~ N(0, 1)

(mean-preserving before rounding and clipping: E[L_ik] ~= L_i), and the energy of an order is
the mean of its energies over the scenarios, ``E(perm) = (1/K) sum_k E_k(perm)``. With
``sigma = 0`` every scenario equals the prediction. Scenario 0 is always the prediction itself, so
the robust energy never ignores the point estimate.

    out = length_scenarios(jax.random.key(0), problem.output_len, k=8, sigma=0.5)   # (8, N)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def length_scenarios(
    key: jax.Array,
    output_len,
    k: int,
    sigma: float | np.ndarray,
    max_len=None,
) -> np.ndarray:
    """(k, N) int32 output-length scenarios around ``output_len`` ((N,) int); row 0 = prediction.

    ``sigma`` is a scalar or an (N,) array (e.g. per task); ``max_len`` an optional (N,) cap (the
    requests' ``max_new_tokens``).
    """
    if k < 1:
        raise ValueError(f"need k >= 1 scenarios, got {k}")
    pred = np.asarray(output_len, np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), pred.shape)
    if np.any(sigma < 0) or not np.all(np.isfinite(sigma)):
        raise ValueError("sigma must be finite and >= 0")
    z = np.asarray(jax.random.normal(key, (k, pred.shape[0]), dtype=jnp.float32), np.float64)
    draws = pred * np.exp(sigma * z - 0.5 * sigma**2)
    draws[0] = pred
    cap = np.inf if max_len is None else np.asarray(max_len, np.float64)
    return np.clip(np.rint(draws), 1, cap).astype(np.int32)


def sample_actual_lengths(rng: np.random.Generator, predicted, sigma, max_len=None) -> np.ndarray:
    """One draw of "actual" lengths around a prediction (for benchmarks: hidden from the planner).

    Same log-normal as ``length_scenarios``; a NumPy generator so that benchmarks can draw the
    truth independently of the planner's JAX key.
    """
    pred = np.asarray(predicted, np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), pred.shape)
    draws = pred * np.exp(sigma * rng.standard_normal(pred.shape) - 0.5 * sigma**2)
    cap = np.inf if max_len is None else np.asarray(max_len, np.float64)
    return np.clip(np.rint(draws), 1, cap).astype(np.int32)
