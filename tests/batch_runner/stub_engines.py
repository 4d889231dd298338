"""Stub engines for executor, job and fault tests: a virtual clock, scripted failures."""

from __future__ import annotations

import time
from collections import deque

from batch_runner.engines.base import EngineError, EngineRequest, Failed, Finished, FirstToken


class StubEngine:
    """Serves requests one at a time in submission order; each takes 1 s of virtual time.

    ``fail_attempts[id] = k``: the first k attempts of ``id`` fail (``Failed`` event).
    ``reject_attempts[id] = k``: the first k ``submit`` calls for ``id`` raise ValueError.
    ``die_after = n``: after n requests finished, ``poll`` raises EngineError.
    ``hang_after = n``: after n requests finished, ``poll`` waits and returns nothing, forever.
    """

    name = "stub"

    def __init__(
        self,
        *,
        slots=4,
        fail_attempts=None,
        reject_attempts=None,
        die_after=None,
        hang_after=None,
        t_start=100.0,
    ):
        self.slots = slots
        self.fail_attempts = dict(fail_attempts or {})
        self.reject_attempts = dict(reject_attempts or {})
        self.die_after = die_after
        self.hang_after = hang_after
        self.t = t_start
        self.queue: deque[EngineRequest] = deque()
        self.submitted: list[str] = []  # every submit call, in order
        self.max_outstanding = 0
        self.finished = 0
        self.started = False
        self.stopped = False

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True

    def now(self):
        return self.t

    def count_tokens(self, request):
        return len(request.prompt or "")

    def submit(self, request):
        assert self.started
        self.submitted.append(request.id)
        if self.reject_attempts.get(request.id, 0) > 0:
            self.reject_attempts[request.id] -= 1
            raise ValueError("prompt too long")
        self.queue.append(request)
        self.max_outstanding = max(self.max_outstanding, len(self.queue))

    def poll(self, timeout):
        if self.die_after is not None and self.finished >= self.die_after:
            raise EngineError("CUDA error: device lost")
        if self.hang_after is not None and self.finished >= self.hang_after:
            time.sleep(min(timeout, 0.01))
            return []
        if not self.queue:
            return []
        req = self.queue.popleft()
        self.t += 1.0
        if self.fail_attempts.get(req.id, 0) > 0:
            self.fail_attempts[req.id] -= 1
            return [Failed(id=req.id, t=self.t, error="out of memory")]
        self.finished += 1
        n_out = req.output_tokens_hint or req.max_new_tokens
        return [
            FirstToken(id=req.id, t=self.t - 0.5),
            Finished(
                id=req.id,
                t=self.t,
                text=f"out-{req.id}",
                input_tokens=3,
                output_tokens=n_out,
                finish_reason="length",
            ),
        ]
