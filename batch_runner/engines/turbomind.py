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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batch_runner.engines.base import (
    EngineError,
    EngineRequest,
    Event,
    Failed,
    Finished,
    FirstToken,
)

log = logging.getLogger(__name__)

_STOP = object()  # dispatcher sentinel
_FINISH_REASONS = {"stop": "stop", "length": "length"}  # lmdeploy's name -> ours


@dataclass(frozen=True)
class TurbomindSettings:
    """What the CLI / TOML ``[engine.turbomind]`` table sets; the rest keeps LMDeploy defaults.

    ``model`` must be a local Hugging Face model directory: hub ids are refused (no downloads in
    the middle of a nightly job). ``session_len=None`` takes the model's context length.
    ``cache_max_entry_count`` is LMDeploy's: a fraction (0, 1] of free GPU memory for the KV
    cache, or an integer > 1 for a number of KV blocks.
    """

    model: str
    max_batch_size: int = 128
    session_len: int | None = None
    cache_max_entry_count: float = 0.8
    max_prefill_token_num: int = 8192
    tp: int = 1
    dtype: str = "auto"  # "auto" | "float16" | "bfloat16"
    trust_remote_code: bool = False
    log_level: str = "WARNING"  # LMDeploy's and TurboMind's own logging

    def __post_init__(self):
        problems = []
        if not isinstance(self.model, str) or not self.model:
            problems.append("model must be a local model directory")
        for name in ("max_batch_size", "max_prefill_token_num", "tp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if self.session_len is not None and (
            not isinstance(self.session_len, int) or self.session_len < 2
        ):
            problems.append(
                f"session_len must be an integer >= 2 or unset, got {self.session_len!r}"
            )
        if not isinstance(self.cache_max_entry_count, int | float) or not (
            self.cache_max_entry_count > 0
        ):
            problems.append(
                "cache_max_entry_count must be a fraction in (0, 1] of free GPU memory or a "
                f"number of KV blocks, got {self.cache_max_entry_count!r}"
            )
        if self.dtype not in ("auto", "float16", "bfloat16"):
            problems.append(f"dtype must be auto, float16 or bfloat16, got {self.dtype!r}")
        if problems:
            raise ValueError("invalid TurboMind settings: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> TurbomindSettings:
        """Build from a TOML table / CLI options, naming any key this engine does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"unknown TurboMind setting(s) {unknown}; known: {sorted(known)}")
        return cls(**table)


def turbomind_engine_config(settings: TurbomindSettings):
    """The ``lmdeploy.TurbomindEngineConfig`` for ``settings``.

    Metrics are off: the Prometheus loggers cost time per chunk and register process-wide
    collectors, and the job measures latencies itself.
    """
    from lmdeploy import TurbomindEngineConfig

    return TurbomindEngineConfig(
        dtype=settings.dtype,
        tp=settings.tp,
        session_len=settings.session_len,
        max_batch_size=settings.max_batch_size,
        cache_max_entry_count=settings.cache_max_entry_count,
        max_prefill_token_num=settings.max_prefill_token_num,
        enable_metrics=False,
    )


def generation_config(request: EngineRequest):
    """The ``lmdeploy.GenerationConfig`` for one request.

    Temperature 0 means greedy (``do_sample=False``; LMDeploy then decodes with top_k = 1).
    Otherwise it samples with the request's temperature, top-p and seed and no top-k cut
    (LMDeploy's default top_k is 50; 0 disables it), so that the seed makes runs repeatable.
    """
    from lmdeploy import GenerationConfig

    sampling = request.sampling
    greedy = sampling.temperature <= 0
    try:
        if greedy:
            return GenerationConfig(
                max_new_tokens=request.max_new_tokens,
                ignore_eos=request.ignore_eos,
                do_sample=False,
            )
        return GenerationConfig(
            max_new_tokens=request.max_new_tokens,
            ignore_eos=request.ignore_eos,
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,
            random_seed=sampling.seed,
        )
    except (AssertionError, ValueError) as exc:  # lmdeploy validates with bare asserts
        raise ValueError(
            f"request {request.id!r}: sampling parameters LMDeploy refuses (temperature must be "
            f"in [0, 2], top_p in [0, 1]): {sampling}" + (f" ({exc})" if str(exc) else "")
        ) from exc


def runtime_problems() -> list[str]:
    """What keeps TurboMind from running in this process; empty when it can run."""
    try:
        import lmdeploy  # noqa: F401
    except ImportError as exc:
        return [
            f"lmdeploy is not installed ({exc}); install it with `pip install lmdeploy` "
            "(or `pip install sajax[turbomind]`) on a machine with a CUDA GPU"
        ]
    problems = []
    import torch

    if not torch.cuda.is_available():
        problems.append(
            f"no CUDA GPU is visible (torch {torch.__version__}: torch.cuda.is_available() is "
            "False); TurboMind runs only on NVIDIA GPUs - use --engine llamacpp on a CPU"
        )
    from lmdeploy import turbomind

    if not turbomind.is_available():
        cause = getattr(turbomind, "_import_error", None)
        problems.append(
            "TurboMind is unavailable: lmdeploy.turbomind.is_available() is False"
            + (f" (its extension failed to load: {cause})" if cause else "")
            + "; install the CUDA build of lmdeploy from PyPI"
        )
    return problems


def model_dir_problems(model: str) -> list[str]:
    """A local model directory with a config.json, or why not (hub ids are refused)."""
    if not os.path.isdir(model):
        return [
            f"model {model!r} is not a local directory; the TurboMind engine loads local "
            "models only (download it first, e.g. `huggingface-cli download ID --local-dir DIR`)"
        ]
    if not os.path.isfile(os.path.join(model, "config.json")):
        return [f"model directory {model!r} has no config.json (not a Hugging Face model)"]
    return []


def check_backend(async_engine) -> None:
    """Raise EngineError unless ``async_engine`` runs TurboMind, not LMDeploy's PyTorch engine.

    Two independent signs: the engine's ``backend`` name, and the type of the config the backend
    engine reports back (TurboMind answers with a TurbomindEngineConfig, the PyTorch engine with a
    PytorchEngineConfig).
    """
    from lmdeploy import TurbomindEngineConfig

    backend = getattr(async_engine, "backend", None)
    config = getattr(async_engine, "backend_config", None)
    if backend != "turbomind" or not isinstance(config, TurbomindEngineConfig):
        raise EngineError(
            f"LMDeploy started the {backend!r} backend (config {type(config).__name__}) instead of "
            "TurboMind; refusing to run: its scheduler does not serve in arrival order, so the "
            "plan would not be followed"
        )


def build_async_engine(settings: TurbomindSettings, backend_config):
    """The real ``lmdeploy.serve.core.AsyncEngine`` on the TurboMind backend."""
    from lmdeploy.serve.core import AsyncEngine

    return AsyncEngine(
        settings.model,
        backend="turbomind",
        backend_config=backend_config,
        trust_remote_code=settings.trust_remote_code,
    )


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
