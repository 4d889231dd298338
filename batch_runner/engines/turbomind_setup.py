"""Setting up the ``turbomind`` engine (``batch_runner.engines.turbomind``): its settings
(``TurbomindSettings``, from a dict or the CLI), LMDeploy's engine and generation configs, what
keeps it from running here (``runtime_problems``, ``model_dir_problems``), building the
``AsyncEngine`` and checking that TurboMind, not LMDeploy's PyTorch fallback, came up
(``build_async_engine``, ``check_backend``). Every ``lmdeploy`` import is inside a function.

    settings = TurbomindSettings(model="/models/Qwen2.5-7B-Instruct", max_batch_size=64)
    problems = runtime_problems()  # [] when this process can run it
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from batch_runner.engines.base import EngineError, EngineRequest


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
