"""`EngineModel`: a continuous-batching engine's parameters as data (vmappable, calibratable).

One engine iteration runs one forward pass over every sequence in flight; it takes::

    t_iter = a_ms + b_ms * forward_tokens + c_ms * sum(context tokens in the batch)
                  + d_ms * sampled_rows

``forward_tokens`` counts the decode tokens (one per sequence past its prefill) plus the prompt
tokens prefilled this iteration (at most ``token_budget`` in all); a sequence's context is its KV
length after the iteration's tokens. ``sampled_rows`` are the sequences that produce a token this
iteration (every decoding sequence, and a prompt's last chunk): each costs the output layer's
logits and the sampling on top of its forward token, which a prompt token does not (on the CPU
engine, SmolLM2-135M: ~11 ms a decode token vs ~6 ms a prompt token; ``d_ms = 0`` is the
three-parameter model). ``slots`` caps the sequences in flight and ``kv_capacity``
(tokens, 0 = unlimited) the sum of ``input + output`` tokens reserved by them. The exact
semantics are ``sajax.refsim``'s; ``sajax.simulate`` is the fast model of the same engine.

Every field is an array so that a model can be vmapped (e.g. over candidate in-flight caps) and
fitted; build one with ``make_engine_model`` or load a profile::

    model = make_engine_model(slots=4, token_budget=512, a_ms=7.0, b_ms=3.6, c_ms=0.002)
    model = load_profile("gpu-7b-a100")          # sajax/profiles/gpu-7b-a100.toml
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np


class EngineModel(NamedTuple):
    slots: jax.Array  # () int32, sequences in flight at most (the in-flight cap)
    token_budget: jax.Array  # () int32, forward tokens per iteration (chunked prefill budget)
    a_ms: jax.Array  # () float32, fixed cost per iteration
    b_ms: jax.Array  # () float32, cost per forward token
    c_ms: jax.Array  # () float32, cost per context token attended
    kv_capacity: jax.Array  # () int32, KV-cache tokens; 0 = unlimited
    d_ms: jax.Array = np.float32(0.0)  # () float32, cost per sampled row (logits + sampling)


FIELDS = EngineModel._fields
_INT_FIELDS = ("slots", "token_budget", "kv_capacity")


def make_engine_model(
    slots: int,
    token_budget: int,
    a_ms: float,
    b_ms: float,
    c_ms: float = 0.0,
    kv_capacity: int = 0,
    d_ms: float = 0.0,
) -> EngineModel:
    """An ``EngineModel`` of NumPy scalars (int32 / float32), checked for sane values."""
    if int(slots) < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if int(token_budget) < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    if int(kv_capacity) < 0:
        raise ValueError(f"kv_capacity must be >= 0 (0 = unlimited), got {kv_capacity}")
    for name, value in (("a_ms", a_ms), ("b_ms", b_ms), ("c_ms", c_ms), ("d_ms", d_ms)):
        if not (np.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    if float(a_ms) + float(b_ms) <= 0:
        raise ValueError("an iteration must cost something: need a_ms + b_ms > 0")
    return EngineModel(
        slots=np.int32(slots),
        token_budget=np.int32(token_budget),
        a_ms=np.float32(a_ms),
        b_ms=np.float32(b_ms),
        c_ms=np.float32(c_ms),
        kv_capacity=np.int32(kv_capacity),
        d_ms=np.float32(d_ms),
    )


def engine_model_from_mapping(values: Mapping[str, Any]) -> EngineModel:
    """An ``EngineModel`` from a mapping of its field names (e.g. a profile's [model]); ``c_ms``,
    ``kv_capacity`` and ``d_ms`` may be left out (0)."""
    missing = [f for f in FIELDS if f not in values and f not in ("c_ms", "kv_capacity", "d_ms")]
    if missing:
        raise ValueError(f"engine model is missing {', '.join(missing)} (fields: {FIELDS})")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown engine model field(s) {unknown} (fields: {FIELDS})")
    return make_engine_model(**{k: values[k] for k in values})


def engine_model_to_dict(model: EngineModel) -> dict[str, int | float]:
    """Plain Python numbers, field by field (for TOML/JSON and for ``sajax.refsim``)."""
    return {
        name: (int(value) if name in _INT_FIELDS else float(value))
        for name, value in zip(FIELDS, model, strict=True)
    }


def load_profile(name_or_path: str) -> EngineModel:
    """The ``EngineModel`` of a profile: a name in ``sajax/profiles`` or a TOML file path."""
    from sajax.profiles import load_profile as _load

    return _load(name_or_path)
