"""`Problem`: one batch job as padded arrays, the planner's input.

Requests are padded to a size bucket (``bucket_size``) with ``mask == False`` rows so that a new
file of similar size reuses the compiled planner. Missing SLOs are ``inf``. Times are ms.

    problem = make_problem(input_len=[12, 300], output_len=[64, 20], slo_e2e_ms=[2000, inf])
"""

from __future__ import annotations

from typing import NamedTuple

import jax


class Problem(NamedTuple):
    input_len: jax.Array  # (N,) int32, prompt tokens (after the chat template)
    output_len: jax.Array  # (N,) int32, predicted (or known) output tokens, >= 1
    slo_e2e_ms: jax.Array  # (N,) float32, end-to-end bound; inf = none
    slo_ttft_ms: jax.Array  # (N,) float32, time-to-first-token bound; inf = none
    slo_tpot_ms: jax.Array  # (N,) float32, time-per-output-token bound; inf = none
    weight: jax.Array  # (N,) float32, > 0 for real rows
    mask: jax.Array  # (N,) bool, False for padding rows
