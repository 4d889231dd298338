"""A stand-in for TurboMind's compiled core, so the REAL lmdeploy AsyncEngine runs on a CPU.

Only the bottom layer is fake: ``lmdeploy.turbomind.TurboMind`` (the object AsyncEngine builds in
``_build_turbomind``) and its request handles (``TurboMindInstance``). Everything above it is
lmdeploy's own code: the chat template, the tokenizer, ``AsyncEngine.preprocess`` and
``generate``, the session manager and its request-handle pool, incremental detokenisation, the
``GenOut`` objects and the mapping of engine statuses to finish reasons and ``RequestError``.

The fake mirrors the interface AsyncEngine uses (lmdeploy 0.18, ``turbomind/turbomind.py``):

    TurboMind.engine_config                  the TurbomindEngineConfig it was built with
    TurboMind.create_instance()              one request handle (AsyncEngine makes max_batch_size)
    TurboMind.close()
    handle.async_stream_infer(session_id, input_ids, gen_config=..., stream_output=..., **kw)
        an async generator of lmdeploy.messages.EngineOutput: status SUCCESS with the *new*
        token ids of each step, then FINISH (or CANCEL / an error status)
    handle.async_cancel(session_id)

Like TurboMind it records an arrival sequence number when a request reaches it, and emits
``tokens_per_step`` tokens per step (TurboMind's async mode hands several tokens to one callback).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from lmdeploy.messages import EngineOutput, ResponseType

# Word ids of the tiny test tokenizer (tiny_model.py): 0 <unk>, 1 <s>, 2 </s>.
EOS_ID = 2
FIRST_WORD_ID = 3


@dataclass
class Arrival:
    seq: int  # arrival number at the engine (TurboMind's arrival id)
    session_id: int
    input_ids: list[int]
    gen_config: object  # the lmdeploy GenerationConfig after AsyncEngine normalised it


@dataclass
class FakeTurboMind:
    engine_config: object  # lmdeploy.TurbomindEngineConfig
    vocab_size: int
    tokens_per_step: int = 3
    step_s: float = 0.002
    # Behaviour chosen by a token anywhere in the prompt:
    eos_after: dict[int, int] = field(default_factory=dict)  # token -> EOS after n tokens
    error_on: set[int] = field(default_factory=set)  # token -> an internal engine error
    cancel_on: set[int] = field(default_factory=set)  # token -> the engine cancels
    arrivals: list[Arrival] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    closed: bool = False

    def create_instance(self, cuda_stream_id: int = 0):
        return _FakeInstance(self)

    def close(self):
        self.closed = True

    def token(self, k: int) -> int:
        """The k-th generated token of any request: ordinary words, never <s> or </s>."""
        return FIRST_WORD_ID + k % (self.vocab_size - FIRST_WORD_ID)


class _FakeInstance:
    def __init__(self, core: FakeTurboMind):
        self.core = core

    async def async_stream_infer(
        self, session_id, input_ids, gen_config=None, stream_output=False, **kwargs
    ):
        core = self.core
        core.arrivals.append(Arrival(len(core.arrivals), session_id, list(input_ids), gen_config))
        prompt = set(input_ids)
        if prompt & core.error_on:
            await asyncio.sleep(core.step_s)
            yield EngineOutput(ResponseType.INTERNAL_ENGINE_ERROR, [])
            return
        if prompt & core.cancel_on:
            await asyncio.sleep(core.step_s)
            yield EngineOutput(ResponseType.CANCEL, [])
            return
        limit = gen_config.max_new_tokens
        eos_at = next((n for t, n in core.eos_after.items() if t in prompt), None)
        if gen_config.ignore_eos:
            eos_at = None
        produced = 0
        while True:
            await asyncio.sleep(core.step_s)
            new = []
            while len(new) < core.tokens_per_step and produced < limit:
                if eos_at is not None and produced == eos_at:
                    new.append(EOS_ID)  # TurboMind stops on a stop id and returns it
                    produced = limit
                    break
                new.append(core.token(produced))
                produced += 1
            done = produced >= limit
            yield EngineOutput(ResponseType.FINISH if done else ResponseType.SUCCESS, new)
            if done:
                return

    async def async_cancel(self, session_id):
        self.core.cancelled.append(session_id)
