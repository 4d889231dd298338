"""Per-task SLO presets from a TOML file (``--slo-config``), for rows that leave them empty.

A preset gives a task kind its SLOs and ``max_new_tokens``; a row's own value always wins, a
missing one comes from the preset of the row's ``task`` (see ``batch_runner.requests``). Two
layouts are accepted:

Scaled (the shipped ``datasets/slo_presets.toml``): one table per hardware scale, one sub-table
per task; ``--slo-scale`` picks the scale, else the file's ``default_scale``::

    default_scale = "cpu"
    [cpu.chat]
    slo_ttft_ms = 30000.0
    slo_tpot_ms = 50.0
    max_new_tokens = 192
    [gpu.chat]
    ...

Flat (a user's own file for one machine): task tables at the top; ``--slo-scale`` is ignored::

    [chat]
    slo_ttft_ms = 2000.0

Keys of a task: ``slo_e2e_ms``, ``slo_ttft_ms``, ``slo_tpot_ms`` (milliseconds, finite, >= 0) and
``max_new_tokens`` (integer > 0); anything else is an error, so a typo cannot silently drop an
SLO::

    presets = load_presets("datasets/slo_presets.toml", scale="cpu")
    presets.tasks["chat"].slo_ttft_ms
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from batch_runner.errors import ConfigError

SLO_KEYS = ("slo_e2e_ms", "slo_ttft_ms", "slo_tpot_ms")
PRESET_KEYS = (*SLO_KEYS, "max_new_tokens")


class TaskPreset(NamedTuple):
    slo_e2e_ms: float | None = None  # end-to-end bound, ms from job start; None = no such SLO
    slo_ttft_ms: float | None = None  # time-to-first-token bound, ms from job start
    slo_tpot_ms: float | None = None  # time-per-output-token bound, ms
    max_new_tokens: int | None = None  # output cap for the task's rows


class SloPresets(NamedTuple):
    tasks: Mapping[str, TaskPreset]  # task name -> preset
    source: Path | None = None  # the TOML file they came from
    scale: str | None = None  # the scale table used (None for a flat file)


def resolve_slo_scale(slo_scale: str | None, engine: str) -> str | None:
    """The scale to use: the one asked for, else ``gpu`` for TurboMind, else None (the file's
    ``default_scale``). Call it with the engine actually chosen (after ``--engine auto``)."""
    if slo_scale is not None:
        return slo_scale
    return "gpu" if engine == "turbomind" else None


def load_presets(path: str | Path, scale: str | None = None) -> SloPresets:
    """Read a preset file; every problem is a ``ConfigError`` naming the file and the key."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"SLO preset file {path}: no such file.", path=path) from None
    except IsADirectoryError:
        raise ConfigError(f"SLO preset file {path} is a directory.", path=path) from None
    except OSError as e:
        raise ConfigError(f"SLO preset file {path}: cannot read it ({e}).", path=path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"SLO preset file {path} is not valid TOML: {e}.", path=path) from None
    return parse_presets(document, source=path, scale=scale)


def parse_presets(
    document: Mapping[str, Any], *, source: Path | None = None, scale: str | None = None
) -> SloPresets:
    """Turn a parsed TOML document (either layout) into ``SloPresets``."""
    where = f"SLO preset file {source}" if source else "SLO presets"
    default_scale = document.get("default_scale")
    if default_scale is not None and not isinstance(default_scale, str):
        raise ConfigError(f'{where}: default_scale must be a string, e.g. "cpu".', path=source)
    tables = {k: v for k, v in document.items() if k != "default_scale"}
    for key, value in tables.items():
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}: top-level key {key!r} must be a table ([{key}] or [scale.{key}]).",
                path=source,
            )
    scale_names = [k for k, v in tables.items() if any(isinstance(x, dict) for x in v.values())]
    if scale_names and len(scale_names) != len(tables):
        flat = sorted(set(tables) - set(scale_names))
        raise ConfigError(
            f"{where} mixes scale tables ({', '.join(scale_names)}) with task tables "
            f"({', '.join(flat)}); use [scale.task] everywhere or [task] everywhere.",
            path=source,
        )
    if not scale_names:
        tasks = {
            name: _task_preset(body, f"{where}, [{name}]", source) for name, body in tables.items()
        }
        return SloPresets(tasks=tasks, source=source, scale=None)

    # Every scale is checked, not only the chosen one: a typo under [gpu] fails a cpu run too.
    scales = {name: _scale_tasks(tables[name], name, where, source) for name in scale_names}
    chosen = scale or default_scale or (scale_names[0] if len(scale_names) == 1 else None)
    if chosen is None:
        raise ConfigError(
            f"{where} has several scales ({', '.join(scale_names)}) and no default_scale; "
            "choose one with --slo-scale.",
            path=source,
        )
    if chosen not in scales:
        raise ConfigError(
            f"{where} has no scale {chosen!r}; it has {', '.join(scale_names)}.", path=source
        )
    return SloPresets(tasks=scales[chosen], source=source, scale=chosen)


def _scale_tasks(
    body: Mapping[str, Any], scale: str, where: str, source: Path | None
) -> dict[str, TaskPreset]:
    tasks = {}
    for name, task in body.items():
        if not isinstance(task, dict):
            raise ConfigError(
                f"{where}: [{scale}] may only hold task tables ([{scale}.<task>]), "
                f"but {name!r} is a {type(task).__name__}.",
                path=source,
            )
        tasks[name] = _task_preset(task, f"{where}, [{scale}.{name}]", source)
    return tasks


def _task_preset(body: Mapping[str, Any], where: str, source: Path | None) -> TaskPreset:
    unknown = sorted(set(body) - set(PRESET_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(PRESET_KEYS)}.",
            path=source,
        )
    values: dict[str, Any] = {}
    for key in SLO_KEYS:
        if key not in body:
            continue
        value = body[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"{where}: {key} = {value!r} must be a finite number of milliseconds >= 0 "
                "(leave the key out for no such SLO).",
                path=source,
            )
        values[key] = float(value)
    if "max_new_tokens" in body:
        value = body["max_new_tokens"]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(
                f"{where}: max_new_tokens = {value!r} must be an integer > 0.", path=source
            )
        values["max_new_tokens"] = value
    return TaskPreset(**values)
