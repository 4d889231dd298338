"""SLO presets: the shipped file parses in both scales; both layouts work; bad files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_runner.errors import ConfigError
from batch_runner.presets import TaskPreset, load_presets, resolve_slo_scale

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "slo_presets.toml"
PAPER_TASKS = {"code", "chat", "classification"}


@pytest.mark.parametrize("scale", ["cpu", "gpu"])
def test_shipped_presets_cover_the_paper_task_kinds(scale):
    presets = load_presets(SHIPPED, scale=scale)
    assert presets.scale == scale and presets.source == SHIPPED
    assert set(presets.tasks) == PAPER_TASKS
    code, chat, cls = (presets.tasks[k] for k in ("code", "chat", "classification"))
    # code and classification are judged end to end; chat by TTFT + TPOT (the paper's split)
    assert code.slo_e2e_ms and code.slo_ttft_ms is None and code.slo_tpot_ms is None
    assert cls.slo_e2e_ms and cls.slo_ttft_ms is None
    assert chat.slo_ttft_ms and chat.slo_tpot_ms and chat.slo_e2e_ms is None
    # classification is the short-output task with the tightest end-to-end bound
    assert cls.max_new_tokens < min(code.max_new_tokens, chat.max_new_tokens)
    assert cls.slo_e2e_ms < code.slo_e2e_ms


def test_shipped_default_scale_is_cpu_and_cpu_bounds_are_looser():
    cpu, gpu = load_presets(SHIPPED), load_presets(SHIPPED, scale="gpu")
    assert cpu.scale == "cpu"
    assert cpu.tasks["code"].slo_e2e_ms > gpu.tasks["code"].slo_e2e_ms
    assert cpu.tasks["chat"].max_new_tokens < gpu.tasks["chat"].max_new_tokens


def test_flat_layout_ignores_the_scale(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[chat]\nslo_ttft_ms = 200\n\n["long task name"]\nmax_new_tokens = 3\n')
    presets = load_presets(path, scale="gpu")
    assert presets.scale is None
    assert presets.tasks == {
        "chat": TaskPreset(slo_ttft_ms=200.0),
        "long task name": TaskPreset(max_new_tokens=3),
    }


BAD = {
    "not toml": ("[cpu.code\nslo_e2e_ms = 1", "not valid TOML"),
    "unknown key": ("[chat]\nslo_ttft = 1.0", "unknown key(s) slo_ttft"),
    "negative slo": ("[chat]\nslo_ttft_ms = -1.0", "slo_ttft_ms = -1.0"),
    "nan slo": ("[chat]\nslo_ttft_ms = nan", "slo_ttft_ms = nan"),
    "inf slo": ("[chat]\nslo_e2e_ms = inf", "slo_e2e_ms = inf"),
    "string slo": ('[chat]\nslo_e2e_ms = "100"', "slo_e2e_ms = '100'"),
    "bool slo": ("[chat]\nslo_e2e_ms = true", "slo_e2e_ms = True"),
    "zero tokens": ("[chat]\nmax_new_tokens = 0", "max_new_tokens = 0"),
    "float tokens": ("[chat]\nmax_new_tokens = 1.5", "max_new_tokens = 1.5"),
    "scalar at top": ("slo_e2e_ms = 5", "top-level key 'slo_e2e_ms'"),
    "mixed layouts": ("[chat]\nslo_e2e_ms = 1\n[cpu.code]\nslo_e2e_ms = 1", "mixes scale tables"),
    "missing scale": ("default_scale = 'tpu'\n[cpu.code]\nslo_e2e_ms = 1", "no scale 'tpu'"),
    "no default scale": ("[cpu.code]\nslo_e2e_ms = 1\n[gpu.code]\nslo_e2e_ms = 1", "--slo-scale"),
    "scalar in scale": ("[cpu]\nx = 1\n[cpu.code]\nslo_e2e_ms = 1", "[cpu] may only hold"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_preset_files_are_config_errors_naming_file_and_key(tmp_path, kind):
    text, words = BAD[kind]
    path = tmp_path / "presets.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_presets(path)
    message = info.value.format_message()
    assert str(path) in message and words in message, message
    assert info.value.exit_code == 2


def test_missing_preset_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_presets(tmp_path / "nope.toml")


def test_a_single_scale_needs_no_default(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text("[laptop.chat]\nslo_tpot_ms = 80\n")
    presets = load_presets(path)
    assert presets.scale == "laptop" and presets.tasks["chat"].slo_tpot_ms == 80.0


def test_a_typo_in_another_scale_is_caught_too(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[cpu.chat]\nslo_tpot_ms = 80\n[gpu.chat]\nslo_tpot = 20\n")
    with pytest.raises(ConfigError, match=r"\[gpu.chat\]: unknown key"):
        load_presets(path, scale="cpu")


def test_resolve_slo_scale():
    assert resolve_slo_scale("cpu", "turbomind") == "cpu"
    assert resolve_slo_scale(None, "turbomind") == "gpu"
    assert resolve_slo_scale(None, "llamacpp") is None
    assert resolve_slo_scale(None, "auto") is None
