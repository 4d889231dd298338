"""The engine interface: submit requests, poll a stream of timestamped events.

Engines know nothing about plans; the executor knows nothing about engine internals. An engine
admits requests in the order they were submitted (TurboMind sorts by arrival; our llama.cpp
loop and the simulator do the same), so the executor's submission order is the priority.

Every event carries ``t``: seconds on the engine's own monotonic clock (``engine.now()``). The
executor reads ``now()`` once at job start and reports all times relative to it, so the
simulator can run on a virtual clock and real engines on ``time.perf_counter``::

    engine.start()
    engine.submit(EngineRequest(id="r1", prompt="Hi", max_new_tokens=16))
    while not done:
        for event in engine.poll(timeout=0.1):
            ...  # FirstToken, Finished or Failed
    engine.stop()
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (``taskset``, a container's cpuset), which
    can be fewer than the machine's ``os.cpu_count()``; threads beyond it only contend."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class EngineRequest:
    id: str
    prompt: str | None = None
    messages: tuple[dict, ...] | None = None  # ({"role": ..., "content": ...}, ...)
    max_new_tokens: int = 256
    ignore_eos: bool = False  # benchmark convention: run to exactly max_new_tokens
    sampling: SamplingParams = field(default_factory=SamplingParams)
    output_tokens_hint: int | None = None  # only the simulator uses it (no text to generate)
    input_tokens_hint: int | None = None  # only the simulator uses it


@dataclass(frozen=True)
class FirstToken:
    id: str
    t: float


@dataclass(frozen=True)
class Finished:
    id: str
    t: float
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" (EOS / stop word) or "length" (max_new_tokens)


@dataclass(frozen=True)
class Failed:
    id: str
    t: float
    error: str


Event = FirstToken | Finished | Failed


class EngineError(RuntimeError):
    """The engine as a whole cannot go on (failed to load, died mid-job)."""


@runtime_checkable
class Engine(Protocol):
    """An engine. Optional class attribute, read with getattr: ``computes_on_host`` (bool,
    default False), True when the model computes on this machine's CPU cores, so that planner
    work beside it (a closed-loop re-plan) slows it down."""

    name: str  # written to the output's `engine` column

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def now(self) -> float:
        """Seconds on the clock the events are stamped with."""
        ...

    def count_tokens(self, request: EngineRequest) -> int:
        """Prompt length in tokens after the chat template (for planning)."""
        ...

    def submit(self, request: EngineRequest) -> None:
        """Queue a request; it is admitted after every request submitted before it."""
        ...

    def poll(self, timeout: float) -> list[Event]:
        """Events since the last poll; waits up to ``timeout`` s when there are none yet."""
        ...
