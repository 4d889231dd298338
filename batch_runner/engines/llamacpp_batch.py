"""One iteration of continuous batching: who gets which tokens, the batch, and sampling.

Every iteration is a single ``llama_decode`` of one batch built under a token budget ``B``::

    batch = [ one decode token for every running sequence      (in admission order) ]
          + [ prompt chunks of sequences still prefilling      (in admission order) ]
    sum(tokens) <= B,   B >= slots  (so decodes always fit; prefill takes what is left)

A decode token is the sequence's last sampled token at position ``n_past``; a prompt chunk is
``prompt[n_past : n_past + k]``. Logits are requested for every decode token and for the last
token of a prompt (the chunk that completes it), so each sequence gets at most one new token per
iteration: the first token comes out of the iteration that finishes its prefill.

The batch's arrays are NumPy arrays we own (``TokenBatch``), handed to llama.cpp as a
``llama_batch`` struct of pointers, so filling a 512-token prefill chunk is a few slice
assignments rather than thousands of ctypes calls. Each row's sequence id is a pointer into a
per-slot id table (``n_seq_id`` = 1).

``IterationRecord`` is what the calibration of the engine model reads (``engine.iteration_log``)::

    t_iter ~ a + b * (decode_tokens + prefill_tokens) + c * context_tokens + d * sampled_rows
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from batch_runner.engines.base import EngineRequest, SamplingParams
from batch_runner.engines.llamacpp_text import TextStream


class IterationRecord(NamedTuple):
    t: float  # engine clock (s) when the iteration started
    seconds: float  # whole iteration: build the batch, llama_decode, sample, emit events
    decode_seconds: float  # llama_decode alone
    decode_tokens: int  # running sequences that decoded one token
    prefill_tokens: int  # prompt tokens processed (chunked prefill)
    context_tokens: int  # sum over the batch's sequences of their KV length after the step
    sequences: int  # sequences in the batch
    sampled_rows: int = 0  # sequences that produced a token (decoders + prompts completed)


@dataclass(eq=False)
class Sequence:
    """A request admitted to a slot: its prompt, progress and output so far."""

    request: EngineRequest
    prompt: np.ndarray  # (p,) int32, the templated prompt's token ids
    slot: int  # the llama.cpp sequence id it owns while running
    rng: np.random.Generator | None = None  # only for sampled (temperature > 0) requests
    n_past: int = 0  # tokens already in the KV cache: positions 0 .. n_past - 1
    output: list[int] = field(default_factory=list)  # sampled token ids, in order
    text: TextStream = field(default_factory=TextStream)

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.prompt)


class Chunk(NamedTuple):
    sequence: Sequence
    tokens: np.ndarray  # (k,) int32, token ids for positions start .. start + k - 1
    start: int  # position of tokens[0]
    wants_logits: bool  # True: the iteration samples this sequence's next token


def schedule(running: list[Sequence], token_budget: int) -> list[Chunk]:
    """The chunks of one iteration: decodes first, then prompt chunks in admission order."""
    chunks: list[Chunk] = []
    room = token_budget
    for seq in running:
        if not seq.prefilling:
            token = np.array([seq.output[-1]], dtype=np.int32)
            chunks.append(Chunk(seq, token, seq.n_past, True))
            room -= 1
    if room < 0:
        raise ValueError(f"token budget {token_budget} < running sequences; need budget >= slots")
    for seq in running:
        if room == 0:
            break
        if seq.prefilling:
            end = min(len(seq.prompt), seq.n_past + room)
            chunks.append(
                Chunk(seq, seq.prompt[seq.n_past : end], seq.n_past, end == len(seq.prompt))
            )
            room -= end - seq.n_past
    return chunks


def sample_token(
    logits: np.ndarray, params: SamplingParams, rng: np.random.Generator | None
) -> int:
    """Next token from one row of logits: argmax when temperature is 0, else nucleus sampling.

    p_i = softmax(logits / T)_i, restricted to the smallest set of most likely tokens whose
    probability sums to >= top_p, renormalised; drawn with the request's own generator.
    """
    if params.temperature <= 0.0:
        return int(np.argmax(logits))
    if rng is None:
        raise ValueError("a sampled request needs a random generator")
    z = logits.astype(np.float64) / params.temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if params.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cumulative = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cumulative, params.top_p)) + 1]
        q = p[keep] / p[keep].sum()
        return int(keep[rng.choice(len(keep), p=q)])
    return int(rng.choice(len(p), p=p))


class TokenBatch:
    """A ``llama_batch`` whose arrays are owned by NumPy (never llama_batch_init / _free)."""

    def __init__(self, capacity: int, slots: int, llama_cpp_module):
        lib = llama_cpp_module
        self.capacity = capacity
        self.n = 0  # rows filled
        self.token = np.zeros(capacity, np.int32)  # (capacity,) token ids
        self.pos = np.zeros(capacity, np.int32)  # (capacity,) positions within each sequence
        self.n_seq_id = np.ones(capacity, np.int32)  # (capacity,) always one sequence per row
        self.slot_ids = np.arange(slots, dtype=np.int32)  # (slots,) sequence id of each slot
        self.seq_id_ptr = np.zeros(capacity, np.uintp)  # (capacity,) &slot_ids[slot] per row
        self.logits = np.zeros(capacity, np.int8)  # (capacity,) 1 = output logits for the row
        self._slot_base = self.slot_ids.ctypes.data
        self._struct = lib.llama_batch()
        self._struct.token = self.token.ctypes.data_as(ctypes.POINTER(lib.llama_token))
        self._struct.embd = None
        self._struct.pos = self.pos.ctypes.data_as(ctypes.POINTER(lib.llama_pos))
        self._struct.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self._struct.seq_id = self.seq_id_ptr.ctypes.data_as(
            ctypes.POINTER(ctypes.POINTER(lib.llama_seq_id))
        )
        self._struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))

    def clear(self) -> None:
        self.n = 0

    def add(self, chunk: Chunk) -> int:
        """Append a chunk; returns the row whose logits it asks for (-1 when none)."""
        k = len(chunk.tokens)
        lo, hi = self.n, self.n + k
        if hi > self.capacity:
            raise ValueError(f"batch overflow: {hi} tokens > capacity {self.capacity}")
        self.token[lo:hi] = chunk.tokens
        self.pos[lo:hi] = np.arange(chunk.start, chunk.start + k, dtype=np.int32)
        self.seq_id_ptr[lo:hi] = self._slot_base + 4 * chunk.sequence.slot
        self.logits[lo:hi] = 0
        self.n = hi
        if chunk.wants_logits:
            self.logits[hi - 1] = 1
            return hi - 1
        return -1

    def struct(self):
        """The ``llama_batch`` to pass to ``llama_decode`` (valid while this object lives)."""
        self._struct.n_tokens = self.n
        return self._struct
