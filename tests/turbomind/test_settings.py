"""Settings validation and the refusals that need no lmdeploy: these run in every venv."""

from __future__ import annotations

import importlib.util

import pytest

from batch_runner.engines.base import EngineError
from batch_runner.engines.turbomind import (
    TurbomindEngine,
    TurbomindSettings,
    model_dir_problems,
    runtime_problems,
)


def test_module_imports_without_touching_lmdeploy():
    import sys

    import batch_runner.engines.turbomind  # noqa: F401

    if importlib.util.find_spec("lmdeploy") is None:
        assert "lmdeploy" not in sys.modules


def test_defaults_are_valid_and_from_dict_round_trips():
    s = TurbomindSettings.from_dict({"model": "/m", "max_batch_size": 32, "session_len": 4096})
    assert s == TurbomindSettings(model="/m", max_batch_size=32, session_len=4096)
    assert s.cache_max_entry_count == 0.8 and s.max_prefill_token_num == 8192


def test_from_dict_names_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown TurboMind setting\(s\) \['max_batch'\]"):
        TurbomindSettings.from_dict({"model": "/m", "max_batch": 8})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_batch_size", 0, "max_batch_size must be a positive integer"),
        ("max_batch_size", 2.5, "max_batch_size must be a positive integer"),
        ("max_prefill_token_num", -1, "max_prefill_token_num must be a positive integer"),
        ("tp", True, "tp must be a positive integer"),
        ("session_len", 1, "session_len must be an integer >= 2"),
        ("cache_max_entry_count", 0.0, "cache_max_entry_count must be"),
        ("cache_max_entry_count", float("nan"), "cache_max_entry_count must be"),
        ("dtype", "fp8", "dtype must be auto, float16 or bfloat16"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        TurbomindSettings(model="/m", **{field: value})


def test_hub_ids_and_non_model_dirs_are_refused(tmp_path):
    assert "not a local directory" in model_dir_problems("Qwen/Qwen2.5-7B-Instruct")[0]
    assert "has no config.json" in model_dir_problems(str(tmp_path))[0]
    (tmp_path / "config.json").write_text("{}")
    assert model_dir_problems(str(tmp_path)) == []


def test_start_refuses_a_hub_id_and_never_builds():
    engine = TurbomindEngine(
        TurbomindSettings(model="Qwen/Qwen2.5-7B-Instruct"),
        runtime_check=lambda: [],
        build=lambda settings, config: pytest.fail("must not build"),
    )
    with pytest.raises(EngineError, match="not a local directory"):
        engine.start()


def test_submit_and_count_before_start_are_engine_errors():
    from batch_runner.engines.base import EngineRequest

    engine = TurbomindEngine(TurbomindSettings(model="/m"))
    with pytest.raises(EngineError, match="not started"):
        engine.submit(EngineRequest(id="a", prompt="hi"))
    engine.stop()  # stopping an engine that never started is a no-op


@pytest.mark.skipif(
    importlib.util.find_spec("lmdeploy") is not None, reason="lmdeploy is installed here"
)
def test_without_lmdeploy_start_says_it_is_not_installed(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert "lmdeploy is not installed" in runtime_problems()[0]
    with pytest.raises(EngineError, match="lmdeploy is not installed"):
        TurbomindEngine(TurbomindSettings(model=str(tmp_path))).start()


def test_from_config_maps_the_cli_options(tmp_path):
    from types import SimpleNamespace

    from batch_runner.engines.turbomind import from_config
    from batch_runner.errors import UserError

    config = SimpleNamespace(model=tmp_path, slots=12, turbomind={"session_len": 2048})
    engine = from_config(config)
    assert engine.settings == TurbomindSettings(
        model=str(tmp_path), max_batch_size=12, session_len=2048
    )
    assert engine.slots == 12  # the job's in-flight cap
    with pytest.raises(UserError, match="needs --model DIR"):
        from_config(SimpleNamespace(model=None, slots=None))
    with pytest.raises(UserError, match="unknown TurboMind setting"):
        from_config(SimpleNamespace(model=tmp_path, slots=None, turbomind={"batch": 1}))
