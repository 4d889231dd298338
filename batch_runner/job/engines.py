"""The job's engine: which one runs (``make_engine``; ``auto``: the first of ``AUTO_ENGINES``
whose runtime is present) and the requests it is handed (``_engine_requests``: one
``EngineRequest`` per table row).

    engine = make_engine(JobConfig(input=..., out=..., engine="sim"))
"""

from __future__ import annotations

import logging

import pyarrow as pa

from batch_runner.engines.base import Engine, EngineError, EngineRequest, SamplingParams
from batch_runner.errors import UserError
from batch_runner.job.config import EngineDied, JobConfig

log = logging.getLogger(__name__)


def _engine_requests(table: pa.Table, sampling: SamplingParams) -> list[EngineRequest]:
    cols = [
        c
        for c in ("id", "prompt", "messages", "max_new_tokens", "ignore_eos", "output_tokens_hint")
        if c in table.column_names
    ]
    out = []
    for row in table.select(cols).to_pylist():
        messages = row.get("messages")
        out.append(
            EngineRequest(
                id=str(row["id"]),
                prompt=row.get("prompt"),
                messages=tuple(dict(m) for m in messages) if messages is not None else None,
                max_new_tokens=int(row.get("max_new_tokens") or 256),
                ignore_eos=bool(row.get("ignore_eos") or False),
                sampling=sampling,
                output_tokens_hint=row.get("output_tokens_hint"),
            )
        )
    return out


AUTO_ENGINES = ("turbomind", "llamacpp")  # "auto": the first whose runtime is present


def make_engine(config: JobConfig) -> Engine:
    """``batch_runner.engines.<name>.from_config(config)``; ``auto`` tries AUTO_ENGINES."""
    import importlib

    name = config.engine
    if name == "auto":
        name = _auto_engine()
        log.info("--engine auto: using %s", name)
    try:
        module = importlib.import_module(f"batch_runner.engines.{name}")
    except ImportError as exc:
        raise UserError(f"unknown or unavailable engine {name!r}: {exc}") from exc
    factory = getattr(module, "from_config", None)
    if factory is None:
        raise UserError(f"engine module {module.__name__} has no from_config(config)")
    try:
        return factory(config)
    except EngineError as exc:
        raise EngineDied(f"engine {name!r} failed to load: {exc}") from exc


def _auto_engine() -> str:
    """The first of AUTO_ENGINES whose module imports and reports no runtime problems."""
    import importlib

    for name in AUTO_ENGINES:
        try:
            module = importlib.import_module(f"batch_runner.engines.{name}")
            check = getattr(module, "runtime_problems", None)
            if check is None or not check():
                return name
        except Exception as exc:  # an engine that cannot even be checked is not available
            log.debug("engine %s unavailable: %s", name, exc)
    return AUTO_ENGINES[-1]
