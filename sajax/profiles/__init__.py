"""Engine profiles: TOML files of `EngineModel` parameters with their provenance (README.md).

A profile is a TOML file with descriptive keys (``name``, ``engine``, ``hardware``, ``llm``) and
a ``[model]`` table holding the ``EngineModel`` fields::

    model = load_profile("gpu-7b-a100")              # a shipped profile, by name
    model = load_profile("calibrated/my-box.toml")    # any file
    info = read_profile("cpu-smollm2-135m")           # the whole TOML as a dict

``"default"`` names the profile of the embedded default engine (llama.cpp on CPU).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from sajax.engine_model import EngineModel, engine_model_from_mapping

PROFILE_DIR = Path(__file__).parent
ALIASES = {"default": "cpu-smollm2-135m", "gpu": "gpu-7b-a100", "cpu": "cpu-smollm2-135m"}


def available_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def profile_path(name_or_path: str | Path) -> Path:
    """The TOML file of a shipped profile name (or alias), or the given path."""
    name = str(name_or_path)
    name = ALIASES.get(name, name)
    shipped = PROFILE_DIR / f"{name}.toml"
    if shipped.is_file():
        return shipped
    path = Path(name_or_path)
    if path.is_file():
        return path
    raise ValueError(
        f"no engine profile {str(name_or_path)!r}: give a TOML file or one of "
        f"{available_profiles() + sorted(ALIASES)}"
    )


def read_profile(name_or_path: str | Path) -> dict[str, Any]:
    """The profile's TOML as a dict (``[model]`` holds the ``EngineModel`` fields)."""
    path = profile_path(name_or_path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    if not isinstance(data.get("model"), dict):
        raise ValueError(f"{path}: a profile needs a [model] table with the EngineModel fields")
    return data


def load_profile(name_or_path: str | Path) -> EngineModel:
    """The ``EngineModel`` of a profile (shipped name, alias, or TOML path)."""
    data = read_profile(name_or_path)
    try:
        return engine_model_from_mapping(data["model"])
    except ValueError as exc:
        raise ValueError(f"{profile_path(name_or_path)}: {exc}") from exc
