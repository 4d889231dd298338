"""Drift for the ``sim`` engine: the engine's speed changes mid-job, output lengths differ from
the hints. For tests and benchmarks of the closed loop (``batch_runner.closed_loop``), which must
notice both and re-plan.

Speed. ``speed = ((t_s, factor), ...)``: from simulated second ``t_s`` of the engine's clock
(from ``start()``) on, every iteration costs ``factor`` times the profile's (a, b, c); the last
point whose time has passed wins (``((30, 2.0),)``: twice as slow after 30 s; ``((30, 2.0),
(60, 1.0))``: back to normal at 60 s). A change takes effect at the first iteration that
*starts* at or after ``t_s`` (an iteration in progress keeps its cost).

Output lengths. For a request without ``ignore_eos``, the engine generates::

    round(base * output_scale * exp(output_sigma * z_id)),  clipped to [1, max_new_tokens]

where ``base`` is ``output_tokens_hint`` (else ``max_new_tokens``) and ``z_id`` a standard
normal drawn from (``seed``, request id), so a request's length is the same in every run.

From the environment (the CLI's sim engine): ``SAJAX_SIM_DRIFT`` holds JSON::

    SAJAX_SIM_DRIFT='{"speed": [[30, 2.0]], "output_scale": 1.5, "output_sigma": 0.3}'
"""

from __future__ import annotations

import json
import math
import os
import zlib
from typing import NamedTuple

import numpy as np

from batch_runner.errors import ConfigError

DRIFT_ENV = "SAJAX_SIM_DRIFT"


class SimDrift(NamedTuple):
    speed: tuple[tuple[float, float], ...] = ()  # (sim seconds from start, cost factor), by time
    output_scale: float = 1.0  # generated / hinted output tokens
    output_sigma: float = 0.0  # log-normal spread of that ratio per request
    seed: int = 0

    def factor_at(self, t_s: float) -> float:
        """The cost factor of an iteration that starts at ``t_s``."""
        factor = 1.0
        for at, f in self.speed:
            if t_s >= at:
                factor = f
        return factor

    def next_change_after(self, t_s: float) -> float:
        """The time of the next speed change after ``t_s`` (inf when none)."""
        return min((at for at, _ in self.speed if at > t_s), default=math.inf)

    def output_tokens(self, request_id: str, base: int, cap: int) -> int:
        """The drifted output length of a request whose undrifted length is ``base``."""
        if self.output_scale == 1.0 and self.output_sigma == 0.0:
            return max(1, min(int(base), int(cap)))
        z = 0.0
        if self.output_sigma > 0:
            seed = zlib.crc32(f"{self.seed}:{request_id}".encode())
            z = float(np.random.default_rng(seed).standard_normal())
        n = round(base * self.output_scale * math.exp(self.output_sigma * z))
        return max(1, min(int(n), int(cap)))

    @property
    def active(self) -> bool:
        return bool(self.speed) or self.output_scale != 1.0 or self.output_sigma != 0.0


def make_drift(
    speed=(), output_scale: float = 1.0, output_sigma: float = 0.0, seed: int = 0
) -> SimDrift:
    """A checked ``SimDrift`` (``ConfigError`` naming the bad value)."""
    try:
        points = tuple(sorted((float(t), float(f)) for t, f in speed))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sim drift: speed must be [[t_s, factor], ...], not {speed!r}") from exc
    for t, f in points:
        if not (t >= 0 and f > 0 and math.isfinite(t) and math.isfinite(f)):
            raise ConfigError(f"sim drift: need t_s >= 0 and factor > 0, got ({t}, {f})")
    if not (output_scale > 0 and math.isfinite(output_scale)) or not output_sigma >= 0:
        raise ConfigError(
            f"sim drift: need output_scale > 0 and output_sigma >= 0, got {output_scale}, "
            f"{output_sigma}"
        )
    return SimDrift(points, float(output_scale), float(output_sigma), int(seed))


def drift_from_env() -> SimDrift | None:
    """``SAJAX_SIM_DRIFT`` (JSON, module doc), or None when it is unset or empty."""
    raw = os.environ.get(DRIFT_ENV, "").strip()
    if not raw:
        return None
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{DRIFT_ENV} must be JSON (see batch_runner.engines.sim_drift): {exc}"
        ) from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{DRIFT_ENV} must be a JSON object, not {raw!r}")
    unknown = set(spec) - set(SimDrift._fields)
    if unknown:
        raise ConfigError(f"{DRIFT_ENV}: unknown keys {sorted(unknown)} (use {SimDrift._fields})")
    return make_drift(**spec)
