"""LMDeploy TurboMind on a CUDA GPU, driven request by request from our own asyncio loop.

TurboMind (LMDeploy 0.18) serves strictly in arrival order: each iteration it sorts the live
sequences by the arrival id a request gets when it reaches the engine and admits them against a
token budget and KV memory. It has no priority parameter, so the order in which we hand requests
to it *is* the priority. This module keeps that order end to end:

    submit(r_1), submit(r_2), ...                       (executor thread, plan order)
      -> asyncio.Queue (FIFO)                           (the loop thread)
      -> one dispatcher: await preprocess(r_k)          (chat template + tokenise, one at a time)
      -> create_task(stream(r_k))                       (tasks start in creation order)
      -> AsyncEngine.generate -> request-handle pool    (an asyncio.Queue: FIFO waiters)
      -> TurboMind async_stream_infer                   (arrival id k' increasing in k)

Times are ``time.perf_counter()`` read in the loop thread when a chunk of the stream arrives:
``FirstToken`` on the first chunk whose cumulative ``generate_token_len`` is positive, ``Finished``
on the chunk that carries a ``finish_reason``. A chunk may carry several tokens, so token counts
come from ``generate_token_len`` (cumulative, excluding a stop token) and never from the number of
chunks. With LMDeploy's benchmark convention the executor then computes

    ttft = t_first - t0,   e2e = t_finish - t0,   tpot = (t_finish - t_first) / (out - 1)

TurboMind needs a CUDA GPU. ``start()`` refuses to run without one, without lmdeploy, when
TurboMind's compiled extension did not load, or when the engine that came up is not TurboMind
(LMDeploy's ``pipeline()`` silently falls back to its PyTorch engine, which orders prefills
differently); every refusal is an ``EngineError`` whose message names what is missing. Every
``lmdeploy`` import is inside a function, so this module imports on machines without it::

    engine = TurbomindEngine(TurbomindSettings(model="/models/Qwen2.5-7B-Instruct",
                                               max_batch_size=64))
    engine.start()
    engine.submit(EngineRequest(id="r1", prompt="Hi", max_new_tokens=16))
    events = engine.poll(timeout=0.1)
    engine.stop()

The settings, LMDeploy's configs and the runtime checks live in
``batch_runner.engines.turbomind_setup``; this module is the engine itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from batch_runner.engines.base import (
    EngineError,
    EngineRequest,
    Event,
    Failed,
    Finished,
    FirstToken,
)
from batch_runner.engines.turbomind_setup import (
    TurbomindSettings,
    build_async_engine,
    check_backend,
    generation_config,
    model_dir_problems,
    runtime_problems,
    turbomind_engine_config,
)

log = logging.getLogger(__name__)

_STOP = object()  # dispatcher sentinel
_FINISH_REASONS = {"stop": "stop", "length": "length"}  # lmdeploy's name -> ours


def _describe(exc: BaseException) -> str:
    """lmdeploy's RequestError carries an ErrorCode and a message; others their type and text."""
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None)
    if code is not None and message is not None:
        return f"{type(exc).__name__} {getattr(code, 'name', code)}: {message}"
    return f"{type(exc).__name__}: {exc}"


def _prompt(request: EngineRequest):
    """What lmdeploy's preprocess takes: a string (wrapped as one user turn) or OpenAI messages."""
    if request.messages is not None:
        return [dict(m) for m in request.messages]
    if request.prompt is None:
        raise ValueError(f"request {request.id!r} has neither prompt nor messages")
    return request.prompt


class TurbomindEngine:
    """The ``Engine`` protocol over LMDeploy's AsyncEngine with the TurboMind backend.

    ``build`` and ``runtime_check`` are seams for tests: by default ``start()`` checks for a GPU
    and TurboMind (``runtime_problems``) and builds the real AsyncEngine.
    """

    name = "turbomind"

    @property
    def slots(self) -> int:
        """Requests TurboMind runs at once (its request-handle pool): the job's in-flight cap."""
        return self.settings.max_batch_size

    def __init__(
        self,
        settings: TurbomindSettings,
        *,
        build: Callable[[TurbomindSettings, Any], Any] = build_async_engine,
        runtime_check: Callable[[], list[str]] = runtime_problems,
    ):
        self.settings = settings
        self._build = build
        self._runtime_check = runtime_check
        self._async_engine = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._requests: asyncio.Queue | None = None  # lives in the loop thread
        self._dispatcher: asyncio.Future | None = None
        self._streams: set[asyncio.Task] = set()
        self._events: queue.Queue[Event] = queue.Queue()
        self._next_session_id = 1  # ours, increasing in submission order
        self._crash: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop is not None:
            raise EngineError("the TurboMind engine is already started")
        problems = model_dir_problems(self.settings.model) + self._runtime_check()
        if problems:
            raise EngineError("cannot start the TurboMind engine: " + "; ".join(problems))
        logging.getLogger("lmdeploy").setLevel(self.settings.log_level)
        os.environ.setdefault("TM_LOG_LEVEL", self.settings.log_level)
        try:
            backend_config = turbomind_engine_config(self.settings)
            async_engine = self._build(self.settings, backend_config)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(
                f"LMDeploy could not load {self.settings.model!r} on TurboMind: {_describe(exc)}"
            ) from exc
        try:
            check_backend(async_engine)
        except EngineError:
            async_engine.close()
            raise
        self._async_engine = async_engine

        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(ready,), name="turbomind-loop", daemon=True
        )
        self._thread.start()
        ready.wait()
        # Binds LMDeploy's session manager to our loop (as lmdeploy.pipeline does).
        async_engine.start_loop(self._loop, use_async_api=False)
        self._dispatcher = asyncio.run_coroutine_threadsafe(self._dispatch(), self._loop)

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, thread = self._loop, self._thread
        if thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=60)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=60)
        try:
            self._async_engine.close()
        finally:
            self._loop = self._thread = self._async_engine = None

    def _run_loop(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._requests = asyncio.Queue()
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        """Stop dispatching; cancel running streams (LMDeploy then cancels them in TurboMind)."""
        self._requests.put_nowait(_STOP)
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(
            *self._streams, asyncio.wrap_future(self._dispatcher), return_exceptions=True
        )

    # -- the Engine protocol -----------------------------------------------------------------

    def now(self) -> float:
        return time.perf_counter()

    def count_tokens(self, request: EngineRequest) -> int:
        """Prompt tokens after the model's chat template, as ``preprocess`` will count them."""
        self._require_running()
        processor = self._async_engine.prompt_processor
        future = asyncio.run_coroutine_threadsafe(
            processor.get_prompt_input(prompt=_prompt(request), do_preprocess=True), self._loop
        )
        return len(future.result()["input_ids"])

    def submit(self, request: EngineRequest) -> None:
        self._require_running()
        # A request without text or with bad sampling is the caller's error, raised here.
        _prompt(request)
        gen_config = generation_config(request)
        # call_soon_threadsafe runs callbacks in call order: the queue keeps submission order.
        self._loop.call_soon_threadsafe(self._requests.put_nowait, (request, gen_config))

    def poll(self, timeout: float) -> list[Event]:
        if self._crash is not None:
            raise EngineError(f"the TurboMind engine loop died: {_describe(self._crash)}")
        events = []
        try:
            events.append(self._events.get(timeout=timeout))
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return events

    def _require_running(self) -> None:
        if self._loop is None:
            raise EngineError("the TurboMind engine is not started; call start() first")
        if self._crash is not None:
            raise EngineError(f"the TurboMind engine loop died: {_describe(self._crash)}")

    # -- the loop thread ---------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Preprocess one request at a time, in submission order, and start its stream.

        A stream task runs synchronously until it waits for a request handle, and LMDeploy's
        handle pool serves waiters first come first served, so requests reach TurboMind - and get
        their arrival ids - in the order their tasks were created here.
        """
        try:
            while True:
                item = await self._requests.get()
                if item is _STOP:
                    return
                request, gen_config = item
                session_id = self._next_session_id
                self._next_session_id += 1
                try:
                    prepared = await self._async_engine.preprocess(
                        messages=_prompt(request),
                        session_id=session_id,
                        gen_config=gen_config,
                    )
                except Exception as exc:  # a bad request (too long, bad template): not fatal
                    self._events.put(Failed(request.id, time.perf_counter(), _describe(exc)))
                    continue
                task = asyncio.get_running_loop().create_task(self._stream(request, prepared))
                self._streams.add(task)
                task.add_done_callback(self._streams.discard)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._crash = exc
                log.exception("TurboMind dispatcher died")
            raise

    async def _stream(self, request: EngineRequest, prepared) -> None:
        """Consume one ``generate`` stream; emit FirstToken / Finished, or Failed."""
        first_seen = False
        pieces: list[str] = []  # text deltas, joined as lmdeploy's Response.extend does
        last = None
        t_last = None
        try:
            async for out in self._async_engine.generate(prepared, stream_response=True):
                t_last = time.perf_counter()
                if not first_seen and out.generate_token_len > 0:
                    first_seen = True
                    self._events.put(FirstToken(request.id, t_last))
                pieces.append(out.response)
                last = out
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # lmdeploy raises RequestError for engine-side errors
            self._events.put(Failed(request.id, time.perf_counter(), _describe(exc)))
            return
        # The finish time is when the chunk with the finish reason arrived, not when LMDeploy
        # finished its bookkeeping after it.
        t = time.perf_counter() if t_last is None else t_last
        reason = None if last is None else last.finish_reason
        if reason in _FINISH_REASONS:
            self._events.put(
                Finished(
                    request.id,
                    t,
                    text="".join(pieces),
                    input_tokens=int(last.input_token_len),
                    output_tokens=int(last.generate_token_len),
                    finish_reason=_FINISH_REASONS[reason],
                )
            )
        elif reason is None:
            self._events.put(
                Failed(request.id, t, "the TurboMind stream ended without a finish reason")
            )
        else:  # "abort" (cancelled, stale session) or "error"
            self._events.put(
                Failed(request.id, t, f"TurboMind finished the request with {reason!r}")
            )


def from_config(config) -> TurbomindEngine:
    """The CLI's turbomind engine: ``--model DIR`` (required), ``--slots`` as max_batch_size, and
    the other settings from an optional ``turbomind`` table (TOML ``[engine.turbomind]``)."""
    from batch_runner.errors import UserError

    model = getattr(config, "model", None)
    if model is None:
        raise UserError(
            "--engine turbomind needs --model DIR, a local Hugging Face model directory"
        )
    table = dict(getattr(config, "turbomind", None) or {})
    table["model"] = str(model)
    if getattr(config, "slots", None):
        table["max_batch_size"] = int(config.slots)
    try:
        return TurbomindEngine(TurbomindSettings.from_dict(table))
    except ValueError as exc:
        raise UserError(str(exc)) from exc


__all__ = [
    "TurbomindEngine",
    "TurbomindSettings",
    "build_async_engine",
    "check_backend",
    "from_config",
    "generation_config",
    "model_dir_problems",
    "runtime_problems",
    "turbomind_engine_config",
]
