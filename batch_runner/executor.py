"""The executor: drive an engine through a plan and time every request.

Requests go to the engine in plan order, with at most ``inflight_cap`` submitted and not yet
finished. Engines admit in submission order, so the submission order *is* the priority. Every
time is read from the engine's own clock and reported relative to the start of execution::

    t0          = engine.now()                       (once, before the first submit)
    submit_ms   = 1000 * (t_submit - t0)              (first attempt)
    first_ms    = 1000 * (t_first_token - t0)         (of the attempt that finished)
    finish_ms   = 1000 * (t_finished - t0)

so that ``e2e = finish_ms`` and ``ttft = first_ms`` follow the offline convention of
``sajax.metrics`` (every request is available at t0).

Failures. A request whose attempt fails (a ``Failed`` event, or ``submit`` raising anything but
``EngineError``) is resubmitted at the front of what is left, up to ``max_retries`` times; after
that it becomes an error measurement (``error`` set) and the job goes on. An ``EngineError``
(the engine as a whole is gone) propagates to the caller; every measurement completed before it
has already been handed to ``on_result``, so the caller can checkpoint them and exit. So does a
stalled engine: with ``stall_timeout_s``, requests in flight and no event from the engine for that
many wall-clock seconds raise ``EngineError`` (a hung engine would otherwise hold an unattended
job forever).

    result = execute(engine, requests_in_plan_order, inflight_cap=8, on_result=save)

Closed loop. A ``controller`` (``batch_runner.closed_loop.ClosedLoop``) hears of every submit
(``on_submit(id, t_ms)``), first token (``on_first_token``) and completed measurement
(``on_complete``), and is asked between polls for a new order of the requests not yet submitted
(``revise(pending_ids, now_ms) -> (ids, cap) | None``): they are re-ordered (a retry waiting at
the front stays there) and the cap applies from the next admission. Requests in flight are never
touched. ``rank`` is the submission order of first attempts, so it stays the executed order.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from batch_runner.engines.base import (
    Engine,
    EngineError,
    EngineRequest,
    Failed,
    Finished,
    FirstToken,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 2
DEFAULT_STALL_TIMEOUT_S = 600.0  # a job's default: no engine event for this long means dead


@dataclass(frozen=True)
class Measurement:
    """What happened to one request; all times are ms from the start of execution."""

    id: str
    rank: int  # position in the executed plan (submission order of first attempts)
    submit_ms: float  # first submission
    first_token_ms: float | None  # None when the request ended in an error
    finish_ms: float | None  # finish (or, for an error, the last failure) time
    output_text: str
    input_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None  # "stop" | "length"; None for an error
    error: str | None  # None when the request finished
    attempts: int  # 1 + retries used


def finished_measurement(
    event: Finished,
    rank: int,
    submit_ms: float,
    first_token_ms: float,
    finish_ms: float,
    attempts: int,
) -> Measurement:
    """The Measurement of a request that finished with ``event``."""
    return Measurement(
        id=event.id,
        rank=rank,
        submit_ms=submit_ms,
        first_token_ms=first_token_ms,
        finish_ms=finish_ms,
        output_text=event.text,
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
        finish_reason=event.finish_reason,
        error=None,
        attempts=attempts,
    )


def failed_measurement(
    request_id: str, rank: int, submit_ms: float, t_ms: float, attempts: int, error: str
) -> Measurement:
    """The Measurement of a request that failed ``attempts`` times (the last at ``t_ms``)."""
    return Measurement(
        id=request_id,
        rank=rank,
        submit_ms=submit_ms,
        first_token_ms=None,
        finish_ms=t_ms,
        output_text="",
        input_tokens=None,
        output_tokens=None,
        finish_reason=None,
        error=f"failed after {attempts} attempt(s): {error}",
        attempts=attempts,
    )


@dataclass(frozen=True)
class ExecutionResult:
    measurements: list[Measurement]  # in completion order
    t0: float  # engine clock (s) at the start of execution
    stopped: bool  # True when should_stop() ended the run early
    unfinished: list[str]  # ids not completed (submitted or never submitted) when stopped


@dataclass
class _Attempt:
    request: EngineRequest
    rank: int
    first_submit_ms: float | None = None
    first_token_ms: float | None = None
    attempts: int = 0
    errors: tuple[str, ...] = ()


def execute(
    engine: Engine,
    requests: Sequence[EngineRequest],
    inflight_cap: int,
    *,
    max_retries: int = DEFAULT_MAX_RETRIES,
    on_result: Callable[[Measurement], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_timeout: float = 0.05,
    first_rank: int = 0,
    stall_timeout_s: float | None = None,
    controller=None,
) -> ExecutionResult:
    """Run ``requests`` (already in plan order) on a started ``engine``.

    Args:
      engine: a started engine (the caller owns ``start``/``stop``).
      requests: the requests in priority (plan) order; ids must be unique.
      inflight_cap: at most this many requests submitted and not yet finished or failed.
      max_retries: extra attempts for a request whose attempt failed.
      on_result: called with each measurement as soon as it is complete (checkpointing).
      should_stop: polled between engine polls; True stops submitting and returns at once
        (requests still in flight are reported in ``unfinished``).
      poll_timeout: seconds each ``engine.poll`` may wait for events.
      first_rank: rank of ``requests[0]`` (a resumed job continues after the ranks it has).
      stall_timeout_s: requests in flight and no event for this many seconds (wall clock) mean
        the engine hangs: ``EngineError``. None: wait forever.
      controller: the closed loop (module doc), or None for a fixed plan.

    Raises:
      EngineError: the engine died or stalled; completed measurements were already passed to
        ``on_result``.
    """
    if inflight_cap < 1:
        raise ValueError(f"inflight_cap must be >= 1, got {inflight_cap}")
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("request ids must be unique")

    t0 = engine.now()
    pending: deque[_Attempt] = deque(_Attempt(request=r, rank=-1) for r in requests)
    next_rank = first_rank
    inflight: dict[str, _Attempt] = {}
    done: list[Measurement] = []

    def ms(t: float) -> float:
        return 1000.0 * (t - t0)

    def complete(m: Measurement) -> None:
        done.append(m)
        if on_result is not None:
            on_result(m)
        if controller is not None:
            controller.on_complete(m)

    def reorder(ids: list[str]) -> None:
        by_id = {a.request.id: a for a in pending}
        wanted = [by_id[i] for i in dict.fromkeys(ids) if i in by_id]
        seen = {a.request.id for a in wanted}
        pending.clear()
        pending.extend([a for a in by_id.values() if a.request.id not in seen] + wanted)

    def fail(att: _Attempt, t_ms: float, error: str) -> None:
        att.errors = att.errors + (error,)
        att.first_token_ms = None
        if att.attempts <= max_retries:
            log.warning(
                "request %s failed (attempt %d): %s; retrying", att.request.id, att.attempts, error
            )
            pending.appendleft(att)  # the front of what is left: it keeps its priority
            return
        submit_ms = att.first_submit_ms if att.first_submit_ms is not None else t_ms
        complete(failed_measurement(att.request.id, att.rank, submit_ms, t_ms, att.attempts, error))

    stopped = False
    last_event = time.monotonic()  # the last submit or engine event (stall detection)
    while pending or inflight:
        if should_stop is not None and should_stop():
            stopped = True
            break
        while pending and len(inflight) < inflight_cap:
            att = pending.popleft()
            att.attempts += 1
            t_submit = ms(engine.now())
            if att.first_submit_ms is None:
                att.first_submit_ms = t_submit
                att.rank = next_rank
                next_rank += 1
            try:
                engine.submit(att.request)
            except EngineError:
                raise
            except Exception as exc:  # a bad request, not a dead engine
                fail(att, t_submit, f"{type(exc).__name__}: {exc}")
                continue
            inflight[att.request.id] = att
            last_event = time.monotonic()
            if controller is not None:
                controller.on_submit(att.request.id, t_submit)
        if not inflight:
            continue
        events = engine.poll(poll_timeout)
        if events:
            last_event = time.monotonic()
        elif stall_timeout_s is not None and time.monotonic() - last_event > stall_timeout_s:
            raise EngineError(
                f"no event from the engine for {stall_timeout_s:g} s with {len(inflight)} "
                "request(s) in flight (stall timeout)"
            )
        for event in events:
            att = inflight.get(event.id)
            if att is None:
                log.warning(
                    "ignoring %s for request %r that is not in flight",
                    type(event).__name__,
                    event.id,
                )
                continue
            if isinstance(event, FirstToken):
                if att.first_token_ms is None:
                    att.first_token_ms = ms(event.t)
                    if controller is not None:
                        controller.on_first_token(event.id, att.first_token_ms)
            elif isinstance(event, Finished):
                del inflight[event.id]
                finish_ms = ms(event.t)
                first_ms = att.first_token_ms if att.first_token_ms is not None else finish_ms
                complete(
                    finished_measurement(
                        event, att.rank, att.first_submit_ms, first_ms, finish_ms, att.attempts
                    )
                )
            elif isinstance(event, Failed):
                del inflight[event.id]
                fail(att, ms(event.t), event.error)
            else:
                log.warning("ignoring unknown event %r", event)
        if controller is not None and pending:
            update = controller.revise([a.request.id for a in pending], ms(engine.now()))
            if update is not None:
                ids, cap = update
                reorder(ids)
                inflight_cap = max(1, int(cap))

    unfinished = [a.request.id for a in inflight.values()] + [a.request.id for a in pending]
    return ExecutionResult(measurements=done, t0=t0, stopped=stopped, unfinished=unfinished)
