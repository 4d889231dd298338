"""One engine replica's own executor: the object a Ray actor holds (plain Python, no Ray here).

The worker owns one engine. The driver hands it requests in plan order (``extend``); a
background thread submits them with at most ``cap`` in flight, reads the engine's events, and
turns each finished request into a ``Measurement`` (the executor's record, times in ms from
this replica's start). The driver collects them in batches with ``poll`` -- one round trip for
many requests, so that the actor boundary costs little per request. ``take_pending`` removes and
returns the requests not yet submitted (for re-planning after another replica died); requests
already submitted stay here and finish here, so nothing runs twice.

Failures are the executor's: a ``Failed`` attempt (or a ``submit`` that raises anything but
``EngineError``) is retried at the front of the queue up to ``max_retries`` times, then becomes an
error measurement. An ``EngineError``, any other exception from the engine, or no engine event
for ``stall_timeout_s`` with requests in flight ends the worker: ``poll`` reports it in
``status["error"]`` and the driver treats the replica as dead.

    w = ReplicaWorker({"engine": "sim", "profile": "default"}, replica=0)
    w.start(); w.run(cap=8); w.extend([(request, rank), ...])
    measurements, status = w.poll(0.5)
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import types
from collections import deque
from typing import Any

from batch_runner.engines.base import EngineError, EngineRequest, Failed, Finished, FirstToken
from batch_runner.executor import Measurement, failed_measurement, finished_measurement

log = logging.getLogger(__name__)

LINGER_S = 0.02  # poll: after the first finished row, wait this long for more


class _Attempt:
    __slots__ = ("request", "rank", "submit_ms", "first_ms", "attempts")

    def __init__(self, request: EngineRequest, rank: int):
        self.request = request
        self.rank = rank
        self.submit_ms: float | None = None
        self.first_ms: float | None = None
        self.attempts = 0


def make_replica_engine(options: dict[str, Any]):
    """``batch_runner.engines.<engine>.from_config`` of an options namespace (``engine``,
    ``profile``, ``model``, ``slots``, ``threads``, ``seed``; ``sim_pace`` paces a sim engine)."""
    options = dict(options)
    name = options.pop("engine", "sim")
    pace = options.pop("sim_pace", None)
    options.pop("num_gpus", None)  # the actor's resource, not an engine option
    if pace is not None:
        os.environ["SAJAX_SIM_PACE"] = str(pace)
    module = importlib.import_module(f"batch_runner.engines.{name}")
    return module.from_config(types.SimpleNamespace(**options))


class ReplicaWorker:
    """An engine and its executor thread (see module doc)."""

    def __init__(self, options: dict[str, Any], replica: int):
        self.options = dict(options)
        self.replica = replica
        self.engine = None
        self._lock = threading.Condition()
        self._pending: deque[_Attempt] = deque()
        self._inflight: dict[str, _Attempt] = {}
        self._out: list[Measurement] = []
        self._first_out = 0.0  # when the oldest row in _out finished (monotonic)
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = False

    # -- called by the driver ------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Build and start the engine; return what the planner needs to know about it."""
        from sajax.engine_model import EngineModel, engine_model_to_dict

        self.engine = make_replica_engine(self.options)
        self.engine.start()
        model = getattr(self.engine, "model", None)
        return {
            "name": self.engine.name,
            "profile": getattr(self.engine, "profile", None),
            "default_profile": getattr(self.engine, "default_profile", None),
            "model": engine_model_to_dict(model) if isinstance(model, EngineModel) else None,
            "pid": os.getpid(),
        }

    def count_tokens(self, requests: list[EngineRequest]) -> list[int]:
        return [int(self.engine.count_tokens(r)) for r in requests]

    def run(
        self,
        cap: int,
        max_retries: int = 2,
        stall_timeout_s: float | None = None,
        poll_timeout: float = 0.05,
    ) -> float:
        """Start the executor thread; returns this replica's t0 (engine clock, s)."""
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self.cap = int(cap)
        self.max_retries = int(max_retries)
        self.stall_timeout_s = stall_timeout_s
        self.poll_timeout = poll_timeout
        self.t0 = self.engine.now()
        self._thread = threading.Thread(target=self._loop, name=f"replica-{self.replica}")
        self._thread.daemon = True
        self._thread.start()
        return self.t0

    def extend(self, items: list[tuple[EngineRequest, int]]) -> None:
        """Queue ``(request, rank)`` pairs after the ones queued before."""
        with self._lock:
            self._pending.extend(_Attempt(r, rank) for r, rank in items)
            self._lock.notify_all()

    def take_pending(self) -> list[str]:
        """Remove and return the ids queued and never submitted (in queue order)."""
        with self._lock:
            taken = [a.request.id for a in self._pending if a.attempts == 0]
            self._pending = deque(a for a in self._pending if a.attempts > 0)
            return taken

    def poll(
        self, timeout: float, linger: float = LINGER_S
    ) -> tuple[list[Measurement], dict[str, Any]]:
        """Measurements finished since the last poll: waits up to ``timeout`` for one, then up
        to ``linger`` more for others (fewer round trips when rows finish in quick succession;
        a real engine's rows take seconds, so the wait costs nothing there)."""
        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        with self._lock:
            while self._error is None and (self._pending or self._inflight):
                now = time.monotonic()
                if self._out:
                    deadline = min(deadline, self._first_out + linger)
                if now >= deadline:
                    break
                self._lock.wait(deadline - now)
            out, self._out = self._out, []
            self._first_out = 0.0
            status = {
                "error": self._error,
                "pending": len(self._pending),
                "inflight": len(self._inflight),
            }
        return out, status

    def cpu_seconds(self) -> float:
        """CPU time this process (engine, executor thread, actor) has used so far."""
        return time.process_time()

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.engine is not None:
            try:
                self.engine.stop()
            except Exception as exc:  # a broken engine must not hide the driver's state
                log.warning("replica %d: engine.stop() failed: %s", self.replica, exc)

    # -- the executor thread -------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._run_loop()
        except Exception as exc:  # the engine is gone: report it, never hang the driver
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"
                self._lock.notify_all()

    def _ms(self, t: float) -> float:
        return 1000.0 * (t - self.t0)

    def _run_loop(self) -> None:
        engine = self.engine
        last_event = time.monotonic()
        while True:
            with self._lock:
                if self._stop:
                    return
                while self._pending and len(self._inflight) < self.cap:
                    att = self._pending.popleft()
                    att.attempts += 1
                    t_submit = self._ms(engine.now())
                    if att.submit_ms is None:
                        att.submit_ms = t_submit
                    try:
                        engine.submit(att.request)
                    except EngineError:
                        raise
                    except Exception as exc:  # a bad request, not a dead engine
                        self._fail(att, t_submit, f"{type(exc).__name__}: {exc}")
                        continue
                    self._inflight[att.request.id] = att
                    last_event = time.monotonic()
                if not self._inflight:
                    self._lock.wait(self.poll_timeout)
                    continue
            events = engine.poll(self.poll_timeout)
            if events:
                last_event = time.monotonic()
            elif self.stall_timeout_s and time.monotonic() - last_event > self.stall_timeout_s:
                raise EngineError(
                    f"no event from the engine for {self.stall_timeout_s:g} s with "
                    f"{len(self._inflight)} request(s) in flight (stall timeout)"
                )
            with self._lock:
                had = len(self._out)
                for event in events:
                    self._handle(event)
                if len(self._out) > had:
                    if not had:
                        self._first_out = time.monotonic()
                    self._lock.notify_all()

    def _handle(self, event) -> None:
        att = self._inflight.get(event.id)
        if att is None:
            log.warning("replica %d: ignoring an event for %r (not in flight)", self.replica, event)
            return
        if isinstance(event, FirstToken):
            if att.first_ms is None:
                att.first_ms = self._ms(event.t)
        elif isinstance(event, Finished):
            del self._inflight[event.id]
            finish = self._ms(event.t)
            self._out.append(
                finished_measurement(
                    event,
                    att.rank,
                    att.submit_ms,
                    att.first_ms if att.first_ms is not None else finish,
                    finish,
                    att.attempts,
                )
            )
        elif isinstance(event, Failed):
            del self._inflight[event.id]
            self._fail(att, self._ms(event.t), event.error)

    def _fail(self, att: _Attempt, t_ms: float, error: str) -> None:
        att.first_ms = None
        if att.attempts <= self.max_retries:
            self._pending.appendleft(att)  # the front of what is left: it keeps its priority
            return
        submit_ms = att.submit_ms if att.submit_ms is not None else t_ms
        self._out.append(
            failed_measurement(att.request.id, att.rank, submit_ms, t_ms, att.attempts, error)
        )
