"""The ``sim`` engine: the Engine protocol over the reference continuous-batching simulator.

No model runs and no text is generated (``output_text`` is empty); every request's timing comes
from ``sajax.refsim.ContinuousBatchSim`` driven by an engine profile (an ``EngineModel``). Used for
dry runs, large benchmarks and tests of the job runner.

Lengths. A request's simulated lengths are::

    output_tokens = max_new_tokens                             if ignore_eos
                  = min(output_tokens_hint, max_new_tokens)    if a hint is given
                  = max_new_tokens                             otherwise
    input_tokens  = input_tokens_hint                          if given
                  = ceil(chars / 4) + 4 * n_messages           otherwise

(about four characters per token for English text, plus a few template tokens per chat
message; it only has to be cheap and deterministic). ``finish_reason`` is ``"length"`` when the
output reaches ``max_new_tokens``, else ``"stop"``.

Clock. By default the clock is virtual: ``now()`` is the simulated time in seconds and ``poll``
advances iterations until at least one event happens, so a job of hours runs in seconds. With
``pace=p`` the clock is wall time scaled by ``p`` (``pace=1.0`` is real time): an iteration's
events come out when the wall clock reaches their time, ``poll`` returns by its timeout, and an
idle engine's clock moves on with the wall clock. For demos, and for tests that kill a running
job (``SAJAX_SIM_PACE`` sets it for the CLI).

Drift (``batch_runner.engines.sim_drift``, ``drift=`` or ``SAJAX_SIM_DRIFT``): the speed can
change mid-job and output lengths can differ from the hints. ``log_iterations=True`` keeps an
``iteration_log`` of ``IterationRecord`` s like the llamacpp engine's (each iteration simulated
one at a time), so per-iteration calibration and refits run on the simulator too.

    engine = SimEngine(load_profile("default"))
    engine.start(); engine.submit(EngineRequest(id="a", prompt="hi", max_new_tokens=8))
    events = engine.poll(0.1)          # [FirstToken("a", t), ...] on the simulated clock
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from batch_runner.engines.base import (
    EngineError,
    EngineRequest,
    Event,
    Finished,
    FirstToken,
)
from batch_runner.engines.llamacpp_batch import IterationRecord
from batch_runner.engines.sim_drift import SimDrift, drift_from_env
from batch_runner.errors import ConfigError
from sajax.engine_model import EngineModel
from sajax.refsim import ContinuousBatchSim

CHARS_PER_TOKEN = 4.0
TOKENS_PER_MESSAGE = 4  # role markers and separators of a chat template
PACE_ENV = "SAJAX_SIM_PACE"  # read by ``from_config``: pace the CLI's sim engine


def estimate_input_tokens(request: EngineRequest) -> int:
    """Prompt tokens: the hint, else ceil(characters / 4) (+4 per chat message), at least 1."""
    if request.input_tokens_hint is not None:
        return max(1, int(request.input_tokens_hint))
    if request.messages is not None:
        chars = sum(len(str(m.get("content") or "")) for m in request.messages)
        extra = TOKENS_PER_MESSAGE * len(request.messages)
    else:
        chars = len(request.prompt or "")
        extra = 0
    return max(1, math.ceil(chars / CHARS_PER_TOKEN) + extra)


def simulated_output_tokens(request: EngineRequest, drift: SimDrift | None = None) -> int:
    """Output tokens: max_new_tokens under ignore_eos, else the hint (capped), else the cap;
    without ignore_eos, ``drift`` scales them (``SimDrift.output_tokens``)."""
    cap = max(1, int(request.max_new_tokens))
    if request.ignore_eos:
        return cap
    base = cap if request.output_tokens_hint is None else int(request.output_tokens_hint)
    if drift is not None:
        return drift.output_tokens(request.id, base, cap)
    return max(1, min(base, cap))


class SimEngine:
    """An Engine whose requests run on ``sajax.refsim.ContinuousBatchSim``."""

    name = "sim"

    def __init__(
        self,
        model: EngineModel,
        *,
        pace: float | None = None,
        profile: str = "",
        drift: SimDrift | None = None,
        log_iterations: bool = False,
    ):
        if pace is not None and not pace > 0:
            raise ValueError(f"pace must be > 0 simulated seconds per wall second, got {pace}")
        self.model = model
        self.pace = pace
        self.profile = profile
        self.drift = drift if drift is not None and drift.active else None
        self.log_iterations = bool(log_iterations)
        # None when not logging: the closed loop and the probe then fit per request
        self.iteration_log: list[IterationRecord] | None = [] if log_iterations else None
        self._sim: ContinuousBatchSim | None = None
        self._lengths: dict[str, tuple[int, int, str]] = {}  # id -> (input, output, reason)
        self._wall0 = 0.0
        self._sim0_s = 0.0
        self._due: tuple[float, list[Event]] | None = None  # paced: (wall time due, events)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._sim = ContinuousBatchSim(self.model)
        self._lengths.clear()
        self._wall0 = time.monotonic()
        self._sim0_s = self._sim.now_ms / 1000.0
        self._due = None
        self._factor = 1.0
        if self.iteration_log is not None:
            self.iteration_log.clear()

    def stop(self) -> None:
        self._sim = None
        self._due = None
        self._lengths.clear()

    @property
    def virtual_clock(self) -> bool:
        """True when the clock is simulated time (no pace): nothing waits for the wall clock."""
        return self.pace is None

    # -- protocol ----------------------------------------------------------------------------
    def now(self) -> float:
        sim_s = self._running().now_ms / 1000.0
        if self.pace is None:
            return sim_s
        # Paced, the clock is wall time scaled: an idle engine's clock moves on, and an
        # iteration already computed but not yet due is not visible yet.
        wall_s = self._sim0_s + (time.monotonic() - self._wall0) * self.pace
        return wall_s if self._sim.idle else min(sim_s, wall_s)

    def count_tokens(self, request: EngineRequest) -> int:
        return estimate_input_tokens(request)

    def submit(self, request: EngineRequest) -> None:
        sim = self._running()
        if request.id in self._lengths:
            raise ValueError(f"request {request.id!r} is already in flight")
        n_in = estimate_input_tokens(request)
        n_out = simulated_output_tokens(request, self.drift)
        reason = "length" if n_out >= request.max_new_tokens else "stop"
        if self.pace is not None and sim.idle:
            sim.advance_to(1000.0 * self.now())  # the idle time that passed, in real time
        self._lengths[request.id] = (n_in, n_out, reason)
        sim.submit(request.id, n_in, n_out)

    def poll(self, timeout: float) -> list[Event]:
        """Events of the next iteration(s) that have any (paced: due within ``timeout``)."""
        sim = self._running()
        if self.pace is None:
            events: list[Event] = []
            while not events and not sim.idle:
                if self._stepwise(sim):
                    events = self._events(self._step(sim))
                else:
                    events = self._events(sim.advance())  # to the next event, in closed form
            return events
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self._due is None:
                if sim.idle:
                    return []
                it = self._step(sim)  # one iteration at a time, so that no sleep is long
                self._due = (self._wall_at(it.t_end_ms / 1000.0), self._events(it))
            wall_due, events = self._due
            if wall_due > deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                return []  # the iteration stays due; a later poll delivers it
            time.sleep(max(0.0, wall_due - time.monotonic()))
            self._due = None
            if events:
                return events

    # -- helpers -----------------------------------------------------------------------------
    def _stepwise(self, sim) -> bool:
        """Simulate one iteration at a time: for the log, or while a speed change is ahead
        (``advance`` would run past it in closed form)."""
        if self.log_iterations:
            return True
        if self.drift is None:
            return False
        self._apply_speed(sim)
        return self.drift.next_change_after(self._clock_s(sim)) < math.inf

    def _apply_speed(self, sim) -> None:
        if self.drift is None:
            return
        factor = self.drift.factor_at(self._clock_s(sim))
        if factor != self._factor:
            m = self.model
            costs = (m.a_ms, m.b_ms, m.c_ms, m.d_ms)
            sim.a_ms, sim.b_ms, sim.c_ms, sim.d_ms = (float(x) * factor for x in costs)
            self._factor = factor

    def _clock_s(self, sim) -> float:
        return sim.now_ms / 1000.0 - self._sim0_s

    def _step(self, sim):
        """One iteration at the speed of its start time, logged when ``log_iterations``."""
        self._apply_speed(sim)
        decoding = 0
        if self.log_iterations:
            decoding = int(np.sum(sim._busy & (sim._pre == sim._inp)))  # before admission
        it = sim.step()
        if self.log_iterations and not it.idle:
            self.iteration_log.append(
                IterationRecord(
                    t=it.t_start_ms / 1000.0,
                    seconds=(it.t_end_ms - it.t_start_ms) / 1000.0,
                    decode_seconds=(it.t_end_ms - it.t_start_ms) / 1000.0,
                    decode_tokens=decoding,
                    prefill_tokens=it.forward_tokens - decoding,
                    context_tokens=it.context_tokens,
                    sequences=it.batch_size,
                    sampled_rows=it.sampled_rows,
                )
            )
        return it

    def _events(self, it) -> list[Event]:
        t = it.t_end_ms / 1000.0
        events: list[Event] = [FirstToken(id=rid, t=t) for rid in it.first_token]
        for rid in it.finished:
            n_in, n_out, reason = self._lengths.pop(rid)
            events.append(
                Finished(
                    id=rid,
                    t=t,
                    text="",
                    input_tokens=n_in,
                    output_tokens=n_out,
                    finish_reason=reason,
                )
            )
        return events

    def _running(self):
        if self._sim is None:
            raise EngineError("the sim engine is not started (call start() first)")
        return self._sim

    def _wall_at(self, sim_s: float) -> float:
        return self._wall0 + (sim_s - self._sim0_s) / self.pace


def pace_from_env() -> float | None:
    """``SAJAX_SIM_PACE`` (simulated seconds per wall second), or None for a virtual clock."""
    raw = os.environ.get(PACE_ENV, "").strip()
    if not raw:
        return None
    try:
        pace = float(raw)
    except ValueError:
        pace = float("nan")
    if not pace > 0:
        raise ConfigError(f"{PACE_ENV} must be a number > 0 (simulated s per wall s), not {raw!r}")
    return pace


def from_config(config) -> SimEngine:
    """The CLI's sim engine: ``--profile`` (default ``default``), pace from ``SAJAX_SIM_PACE``,
    drift from ``SAJAX_SIM_DRIFT``."""
    from sajax.profiles import load_profile

    profile = getattr(config, "profile", None) or "default"
    try:
        model = load_profile(profile)
    except ValueError as exc:
        raise ConfigError(f"--profile: {exc}") from exc
    slots = getattr(config, "slots", None)
    if slots:  # --slots sets the simulated engine's sequence slots as well as the cap
        model = model._replace(slots=np.int32(slots))
    return SimEngine(model, pace=pace_from_env(), profile=str(profile), drift=drift_from_env())
