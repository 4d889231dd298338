"""Reference simulator of a TurboMind-like continuous-batching engine (NumPy, exact per iteration).

This is the definition of the engine that ``EngineModel`` describes; ``sajax.simulate`` is a fast
approximation of it and is tested against it. One iteration:

1. Admission, strictly in submission order: while a slot is free (at most ``slots`` sequences in
   flight) and — when ``kv_capacity > 0`` — the queue head's ``input + output`` tokens fit in the
   unreserved KV capacity, the head is admitted. The head blocks everything behind it, as
   TurboMind stops at the first request that does not fit. (A request larger than the whole
   capacity is admitted only into an empty engine, so that it cannot block the queue forever.)
2. The batch: one decode token for every sequence whose prompt is done, then prompt chunks of the
   admitted sequences in admission order within the rest of the token budget::

       prefill budget = max(token_budget - decoding, 0)

3. Its time::

       t_iter = a_ms + b_ms * forward_tokens + c_ms * sum(context tokens) + d_ms * sampled_rows

   where ``sampled_rows`` counts the sequences that produce a token (step 4), and a sequence's
   context is its KV length after this iteration's tokens (a decode step of a sequence with
   ``g`` tokens generated so far: ``input + g``; a prompt chunk: the prompt tokens prefilled so
   far, this chunk included).
4. The iteration that completes a prompt produces its first output token (so ``output = 1``
   finishes there); each later iteration adds one token. A sequence leaves when it has
   ``output`` tokens, freeing its slot and KV reservation for the next iteration's admission.

Incremental use (the ``sim`` engine drives it as requests arrive)::

    sim = ContinuousBatchSim(load_profile("gpu-7b-a100"))
    sim.submit("a", input_len=120, output_len=30)
    it = sim.step()            # one iteration: it.t_end_ms, it.first_token, it.finished
    it = sim.advance()         # iterations up to the next one with an event (same result, faster)

Whole jobs (everything submitted at t0 in ``order``)::

    ref = reference_simulate(order, input_len, output_len, model)   # arrays indexed by request
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import numpy as np


class IterationResult(NamedTuple):
    t_start_ms: float  # engine clock when the (first) iteration started
    t_end_ms: float  # engine clock when the (last) iteration ended; events carry this time
    first_token: list  # ids whose first output token came out of this iteration
    finished: list  # ids that produced their last token in this iteration
    idle: bool  # True: nothing queued or running, nothing ran, the clock did not move
    forward_tokens: int  # tokens in the (last) forward pass
    context_tokens: int  # sum of the context lengths of the (last) batch
    batch_size: int  # sequences in the (last) forward pass
    iterations: int = 1  # iterations run (``advance`` may run several; 0 when idle)
    sampled_rows: int = 0  # sequences that produced a token in the (last) iteration


class RefTimings(NamedTuple):
    first_token_ms: (
        np.ndarray
    )  # (N,) float64, end of the iteration with the first token (NaN: not run)
    finish_ms: np.ndarray  # (N,) float64, end of the iteration with the last token (NaN: not run)
    n_iterations: int  # engine iterations of the whole job


def _model_numbers(model: Any) -> tuple[int, int, float, float, float, float, int]:
    """Python numbers from an ``EngineModel`` (NumPy/JAX scalars) or any object with its fields."""
    slots = int(model.slots)
    budget = int(model.token_budget)
    kv = int(getattr(model, "kv_capacity", 0))
    if slots < 1 or budget < 1 or kv < 0:
        raise ValueError(f"need slots >= 1, token_budget >= 1, kv_capacity >= 0: {model}")
    d = float(getattr(model, "d_ms", 0.0))
    return slots, budget, float(model.a_ms), float(model.b_ms), float(model.c_ms), d, kv


class ContinuousBatchSim:
    """The engine, one iteration per ``step()``; times in ms on a virtual clock from 0."""

    def __init__(self, model: Any):
        slots, budget, a, b, c, d, kv = _model_numbers(model)
        self.slots, self.token_budget, self.kv_capacity = slots, budget, kv
        self.a_ms, self.b_ms, self.c_ms, self.d_ms = a, b, c, d
        self._now = 0.0
        self._queue: deque[tuple[Any, int, int]] = deque()
        self._ids: list[Any] = [None] * slots
        self._busy = np.zeros(slots, bool)
        self._inp = np.zeros(slots, np.int64)  # prompt tokens
        self._out = np.zeros(slots, np.int64)  # output tokens wanted
        self._pre = np.zeros(slots, np.int64)  # prompt tokens prefilled so far
        self._gen = np.zeros(slots, np.int64)  # output tokens generated so far
        self._seq = np.zeros(slots, np.int64)  # admission number (prefill order)
        self._admitted = 0
        self._kv_used = 0

    # -- state ---------------------------------------------------------------------------------
    @property
    def now_ms(self) -> float:
        return self._now

    @property
    def running(self) -> int:
        return int(self._busy.sum())

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy.any()

    # -- input ---------------------------------------------------------------------------------
    def submit(self, rid: Any, input_len: int, output_len: int) -> None:
        """Queue a request behind every earlier submission."""
        if int(input_len) < 1 or int(output_len) < 1:
            raise ValueError(f"request {rid!r}: need input_len >= 1 and output_len >= 1")
        self._queue.append((rid, int(input_len), int(output_len)))

    def advance_to(self, t_ms: float) -> None:
        """Move an idle engine's clock forward to ``t_ms`` (a gap with nothing to do)."""
        if not self.idle:
            raise RuntimeError("advance_to: the engine is busy; only an idle clock can jump")
        self._now = max(self._now, float(t_ms))

    # -- iterations ----------------------------------------------------------------------------
    def step(self) -> IterationResult:
        """Run ONE iteration (admission, forward pass, bookkeeping)."""
        self._admit()
        if not self._busy.any():
            return self._idle_result()
        return self._iterate()

    def advance(self) -> IterationResult:
        """Run iterations until one produces an event (or the engine is idle).

        Stretches where every sequence in flight is decoding and nothing can be admitted are
        computed in closed form; the clock and events equal those of calling ``step()`` in a loop.
        """
        self._admit()
        if not self._busy.any():
            return self._idle_result()
        busy = self._busy
        if np.any(busy & (self._pre < self._inp)):
            return self._iterate()  # a prompt is in progress: one exact iteration
        # Pure decode until the next finish, k iterations; admission cannot change before it
        # (the head did not fit now and nothing is released until a sequence finishes).
        left = np.where(busy, self._out - self._gen, np.iinfo(np.int64).max)
        k = int(left.min())
        if k > 1:
            n = int(busy.sum())
            ctx0 = int(np.sum((self._inp + self._gen)[busy]))
            quiet = k - 1  # iterations without an event, in closed form
            per_iter = self.a_ms + (self.b_ms + self.d_ms) * n  # every sequence samples
            t0 = self._now
            self._now += (
                quiet * (per_iter + self.c_ms * ctx0) + self.c_ms * n * quiet * (quiet - 1) / 2
            )
            self._gen[busy] += quiet
            last = self._iterate()
            return last._replace(t_start_ms=t0, iterations=quiet + 1)
        return self._iterate()

    # -- internals -----------------------------------------------------------------------------
    def _idle_result(self) -> IterationResult:
        return IterationResult(self._now, self._now, [], [], True, 0, 0, 0, 0)

    def _admit(self) -> None:
        while self._queue and not self._busy.all():
            rid, n_in, n_out = self._queue[0]
            need = n_in + n_out
            if self.kv_capacity > 0 and self._kv_used + need > self.kv_capacity:
                if self._busy.any():
                    break  # the head does not fit: it blocks the queue
            self._queue.popleft()
            slot = int(np.argmin(self._busy))
            self._ids[slot] = rid
            self._busy[slot] = True
            self._inp[slot], self._out[slot] = n_in, n_out
            self._pre[slot] = self._gen[slot] = 0
            self._seq[slot] = self._admitted
            self._admitted += 1
            self._kv_used += need

    def _iterate(self) -> IterationResult:
        busy, inp, pre, gen = self._busy, self._inp, self._pre, self._gen
        decoding = busy & (pre == inp)
        prefilling = busy & (pre < inp)
        n_dec = int(decoding.sum())
        # Prompt chunks in admission order, greedily, within what the decode tokens leave.
        chunk = np.zeros_like(pre)
        if prefilling.any():
            idx = np.flatnonzero(prefilling)
            idx = idx[np.argsort(self._seq[idx], kind="stable")]
            remaining = inp[idx] - pre[idx]
            before = np.cumsum(remaining) - remaining
            room = max(self.token_budget - n_dec, 0)
            chunk[idx] = np.clip(room - before, 0, remaining)
        chunked = chunk > 0
        forward = n_dec + int(chunk.sum())
        context = int(np.sum((inp + gen)[decoding]) + np.sum((pre + chunk)[chunked]))
        # Bookkeeping: completed prompts emit their first token, decoders one more.
        pre += chunk
        first = prefilling & (pre == inp)
        sampled = n_dec + int(first.sum())
        t_start = self._now
        self._now = (
            t_start + self.a_ms + self.b_ms * forward + self.c_ms * context + self.d_ms * sampled
        )
        gen[decoding | first] += 1
        done = busy & (gen >= self._out) & (pre == inp)
        first_ids = [self._ids[i] for i in np.flatnonzero(first)]
        done_idx = np.flatnonzero(done)
        done_ids = [self._ids[i] for i in done_idx]
        if len(done_idx):
            self._kv_used -= int(np.sum(inp[done_idx] + self._out[done_idx]))
            busy[done_idx] = False
            for i in done_idx:
                self._ids[i] = None
        return IterationResult(
            t_start,
            self._now,
            first_ids,
            done_ids,
            False,
            forward,
            context,
            n_dec + int(chunked.sum()),
            sampled_rows=sampled,
        )


def reference_simulate(order, input_len, output_len, model: Any) -> RefTimings:
    """Run a whole job: requests ``order[0], order[1], ...`` all submitted at t0.

    ``input_len`` and ``output_len`` are indexed by request; so are the returned times (ms from
    t0). Requests not in ``order`` get NaN.
    """
    order = np.asarray(order, np.int64)
    inp = np.asarray(input_len, np.int64)
    out = np.asarray(output_len, np.int64)
    if len(np.unique(order)) != len(order):
        raise ValueError("order repeats a request")
    sim = ContinuousBatchSim(model)
    for i in order:
        sim.submit(int(i), int(inp[i]), int(out[i]))
    first = np.full(len(inp), np.nan)
    finish = np.full(len(inp), np.nan)
    iterations = 0
    while True:
        it = sim.advance()
        if it.idle:
            break
        iterations += it.iterations
        first[it.first_token] = it.t_end_ms
        finish[it.finished] = it.t_end_ms
    return RefTimings(first, finish, iterations)
