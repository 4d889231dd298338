"""`EngineModel`: a continuous-batching engine's parameters as data (vmappable, calibratable).

    t_iter = a_ms + b_ms * forward_tokens + c_ms * sum(context tokens in the batch)
"""

from __future__ import annotations

from typing import NamedTuple

import jax


class EngineModel(NamedTuple):
    slots: jax.Array  # () int32, sequences in flight at most (the in-flight cap)
    token_budget: jax.Array  # () int32, forward tokens per iteration (chunked prefill budget)
    a_ms: jax.Array  # () float32, fixed cost per iteration
    b_ms: jax.Array  # () float32, cost per forward token
    c_ms: jax.Array  # () float32, cost per context token attended
    kv_capacity: jax.Array  # () int32, KV-cache tokens; 0 = unlimited
