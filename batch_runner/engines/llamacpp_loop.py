"""The iteration loop of the ``llamacpp`` engine (``batch_runner.engines.llamacpp``), run in its
background thread: admit pending requests into free slots in submission order, schedule one
batch of prefill chunks and decode tokens (``llamacpp_batch.schedule``), ``llama_decode`` it,
sample each sequence's next token and emit ``FirstToken`` / ``Finished`` / ``Failed``.

``IterationLoop`` is a mixin of ``LlamaCppEngine``, which owns the state it uses (the context,
the batch, the slots, the condition and the event queue; see ``LlamaCppEngine.__init__``).
"""

from __future__ import annotations

import numpy as np

from batch_runner.engines.base import Event, Failed, Finished, FirstToken
from batch_runner.engines.llamacpp_batch import IterationRecord, Sequence, sample_token, schedule

_IDLE_WAIT_S = 0.5  # the loop sleeps on a condition; this only bounds a missed wake-up
_WAKE = object()  # put on the event queue to wake a poll() when the engine dies


class IterationLoop:
    """The loop thread's methods of ``LlamaCppEngine`` (module doc)."""

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    self._admit()
                    while not self._running and not self._stopping:
                        self._cond.wait(_IDLE_WAIT_S)
                        self._admit()
                    if self._stopping:  # checked every iteration: stop() never waits for a job
                        return
                self._iterate()
        except BaseException as exc:  # the engine is dead: tell poll() and submit()
            self._fatal = exc
            self._events.put(_WAKE)

    def _admit(self) -> None:
        """Move pending requests into free slots, strictly in submission order (holds _cond)."""
        while self._free_slots and self._pending:
            seq = self._pending.popleft()
            seq.slot = self._free_slots.pop(0)
            self._running.append(seq)

    def _iterate(self) -> None:
        lib, tokenizer = self._lib, self._tokenizer
        t_start = self.now()
        chunks = schedule(self._running, self.token_budget)
        decode_tokens = sum(1 for c in chunks if c.start >= len(c.sequence.prompt))
        batch = self._batch
        batch.clear()
        rows: list[tuple[Sequence, int]] = []
        for chunk in chunks:
            row = batch.add(chunk)
            if row >= 0:
                rows.append((chunk.sequence, row))
        t_decode = self.now()
        status = lib.llama_decode(self._ctx, batch.struct())
        decode_seconds = self.now() - t_decode
        if status != 0:
            failed = {id(c.sequence): c.sequence for c in chunks}
            for seq in failed.values():
                self._finish(
                    seq, Failed(seq.request.id, self.now(), f"llama_decode returned {status}")
                )
            return
        for chunk in chunks:
            chunk.sequence.n_past += len(chunk.tokens)
        sampled: list[tuple[Sequence, int | Exception]] = []
        for seq, row in rows:
            try:
                logits = np.ctypeslib.as_array(
                    lib.llama_get_logits_ith(self._ctx, row), shape=(tokenizer.n_vocab,)
                )
                sampled.append((seq, sample_token(logits, seq.request.sampling, seq.rng)))
            except Exception as exc:  # a bad row fails its request, not the engine
                sampled.append((seq, exc))
        t_tokens = self.now()
        for seq, token in sampled:
            if isinstance(token, Exception):
                self._finish(seq, Failed(seq.request.id, t_tokens, f"sampling failed: {token!r}"))
                continue
            try:
                self._accept(seq, token, t_tokens)
            except Exception as exc:
                self._finish(seq, Failed(seq.request.id, t_tokens, f"decoding failed: {exc!r}"))
        self.iteration_log.append(
            IterationRecord(
                t=t_start,
                seconds=self.now() - t_start,
                decode_seconds=decode_seconds,
                decode_tokens=decode_tokens,
                prefill_tokens=sum(len(c.tokens) for c in chunks) - decode_tokens,
                context_tokens=sum(c.start + len(c.tokens) for c in chunks),
                sequences=len(chunks),
                sampled_rows=len(rows),
            )
        )
        limit = self.iteration_log_limit
        if limit is not None and len(self.iteration_log) > limit:
            del self.iteration_log[: max(1, limit // 10)]

    def _accept(self, seq: Sequence, token: int, t: float) -> None:
        """Record a sampled token; emit FirstToken / Finished as it warrants."""
        request = seq.request
        seq.output.append(token)
        if len(seq.output) == 1:
            self._events.put(FirstToken(request.id, t))
        if self._tokenizer.is_end_of_generation(token) and not request.ignore_eos:
            self._finish(seq, self._finished(seq, t, "stop"))
            return
        seq.text.feed(self._tokenizer.piece(token))
        if len(seq.output) >= request.max_new_tokens:
            self._finish(seq, self._finished(seq, t, "length"))

    @staticmethod
    def _finished(seq: Sequence, t: float, reason: str) -> Finished:
        return Finished(
            id=seq.request.id,
            t=t,
            text=seq.text.close(),
            input_tokens=len(seq.prompt),
            output_tokens=len(seq.output),
            finish_reason=reason,
        )

    def _finish(self, seq: Sequence, event: Event) -> None:
        """Emit the final event, free the slot's KV cache and hand the slot to the next request."""
        self._lib.llama_memory_seq_rm(self._memory, seq.slot, -1, -1)
        self._running.remove(seq)
        self._events.put(event)
        with self._cond:
            self._free_slots.append(seq.slot)
            self._free_slots.sort()
            self._admit()
