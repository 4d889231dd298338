"""The calibrated profile file: a TOML document in ``sajax.profiles``' format (``[model]`` with
the EngineModel fields, provenance keys), plus ``[fit]`` (errors) and
``[output_lengths.<task>]`` tables; and a small TOML writer for it.

    Path("cpu.toml").write_text(dumps_toml(profile_document(name="cpu", ...)))
"""

from __future__ import annotations

import datetime
import math
import os
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np

from batch_runner.calibrate_fit import IterationFit
from batch_runner.output_lengths import OutputLengthPredictor, predictor_tables


def profile_document(
    *,
    name: str,
    engine: str,
    llm: str,
    model: Mapping[str, Any] | None,
    fit: IterationFit | None,
    fit_source: str,
    predictor: OutputLengthPredictor | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The TOML document of a calibrated profile (``sajax.profiles`` format)."""
    doc: dict[str, Any] = {
        "name": name,
        "engine": engine,
        "hardware": f"{platform.machine()}, {_cpu_count()} CPU cores, {platform.system()}",
        "llm": llm,
        "calibrated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if extra:
        doc.update(extra)
    if model is not None:
        doc["model"] = dict(model)
    if fit is not None:
        doc["fit"] = {"source": fit_source, **fit._asdict()}
    if predictor is not None:
        doc.update(predictor_tables(predictor))
    return doc


def dumps_toml(doc: Mapping[str, Any]) -> str:
    """TOML for a document of scalars, lists of scalars and nested tables (what we write)."""
    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
        if prefix and scalars:
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in table.items():
            if isinstance(v, Mapping):
                emit(v, f"{prefix}.{_key(k)}" if prefix else _key(k))

    emit(doc, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else f'"{k}"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if math.isnan(v):
            return "nan"
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    text = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _cpu_count() -> int:
    return os.cpu_count() or 1
