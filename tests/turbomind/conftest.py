"""Fixtures for the TurboMind contract tests (run in .venv-turbomind; see requirements/).

These tests need the lmdeploy Python package (no GPU). Without it they are skipped - unless
SAJAX_REQUIRE_LMDEPLOY=1 (set by `make test-turbomind`), where a missing lmdeploy is an error,
so that the target cannot pass by skipping everything.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.turbomind.tiny_model import build_tiny_model

HAVE_LMDEPLOY = importlib.util.find_spec("lmdeploy") is not None

if os.environ.get("SAJAX_REQUIRE_LMDEPLOY") == "1" and not HAVE_LMDEPLOY:
    raise RuntimeError(
        "SAJAX_REQUIRE_LMDEPLOY=1 but lmdeploy is not importable: run these tests with "
        ".venv-turbomind/bin/python (make test-turbomind)"
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A local Hugging Face model directory without weights (see tiny_model.py)."""
    pytest.importorskip("lmdeploy")
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
