"""The CLI shell: every bad input is exit 2 with one message and no traceback; options reach
the modules they hand over to; the installed console scripts behave the same."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batch_runner import cli
from batch_runner.requests import MESSAGES_TYPE

from .test_parquet_io import BAD_FILE_KINDS, bad_files

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "datasets" / "slo_presets.toml"
TINY = ROOT / "datasets" / "samples" / "tiny.parquet"


def write(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of bad request file, and a word its error message must contain."""
    files = {k: (p, str(p.name)) for k, p in bad_files(tmp_path).items()}
    d = tmp_path
    return {
        **files,
        "missing prompt": (write(d / "a.parquet", {"prompt": ["x", None]}), "prompt"),
        "duplicate id": (write(d / "b.parquet", {"id": [1, 1], "prompt": ["x", "y"]}), "id"),
        "negative slo": (
            write(d / "c.parquet", {"prompt": ["x"], "slo_e2e_ms": [-5.0]}),
            "slo_e2e_ms",
        ),
        "nan slo": (
            write(d / "d.parquet", {"prompt": ["x"], "slo_ttft_ms": [float("nan")]}),
            "NaN",
        ),
        "inf slo": (
            write(d / "e.parquet", {"prompt": ["x"], "slo_tpot_ms": [float("inf")]}),
            "infinite",
        ),
        "prompt as int": (write(d / "f.parquet", {"prompt": [1]}), "prompt"),
        "slo as string": (
            write(d / "g.parquet", {"prompt": ["x"], "slo_e2e_ms": ["1"]}),
            "slo_e2e_ms",
        ),
        "empty file": (write(d / "h.parquet", {"prompt": pa.array([], pa.string())}), "no rows"),
        "no prompt or messages column": (write(d / "i.parquet", {"text": ["x"]}), "messages"),
        "null messages": (
            write(d / "j.parquet", {"messages": pa.array([None], MESSAGES_TYPE)}),
            "messages",
        ),
    }


def _kinds() -> list[str]:
    return [
        *BAD_FILE_KINDS,
        "missing prompt",
        "duplicate id",
        "negative slo",
        "nan slo",
        "inf slo",
        "prompt as int",
        "slo as string",
        "empty file",
        "no prompt or messages column",
        "null messages",
    ]


@pytest.fixture
def fake_job(monkeypatch):
    """A stand-in batch_runner.job that records the JobConfig it is given."""
    module = types.ModuleType("batch_runner.job")
    calls = []

    class JobConfig:
        def __init__(self, **fields):
            self.__dict__.update(fields)

    def run_job(config, requests=None):
        calls.append(config)
        module.requests.append(requests)
        return {"rows": 0}

    module.JobConfig, module.run_job, module.calls = JobConfig, run_job, calls
    module.requests = []
    monkeypatch.setitem(sys.modules, "batch_runner.job", module)
    return module


def test_kind_list_matches_the_builder(tmp_path):
    assert set(_kinds()) == set(bad_inputs(tmp_path))


# --- sajax-batch ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", _kinds())
def test_batch_bad_input_exits_2_with_one_message(tmp_path, kind, fake_job):
    path, word = bad_inputs(tmp_path)[kind]
    result = CliRunner().invoke(cli.batch_main, [str(path), "--out", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no uncaught exception, so no traceback
    assert "Error:" in result.output and word in result.output
    assert fake_job.calls == [], "nothing runs after a refused input"


def test_batch_validates_once_and_hands_the_rows_to_the_job(tmp_path, fake_job):
    result = CliRunner().invoke(
        cli.batch_main,
        [str(TINY), "--out", str(tmp_path / "r.parquet"), "--slo-config", str(PRESETS)],
    )
    assert result.exit_code == 0, result.output
    assert "classification" in result.output and "total" in result.output
    (handed,) = sys.modules["batch_runner.job"].requests
    assert handed is not None and handed.table.num_rows == 12


def test_batch_hands_every_option_to_run_job(tmp_path, fake_job):
    out = tmp_path / "r.parquet"
    args = [
        str(TINY),
        "--out",
        str(out),
        "--engine",
        "sim",
        "--policy",
        "edf",
        "--objective",
        "attainment",
        "--time-budget",
        "2.5",
        "--chains",
        "12",
        "--seed",
        "7",
        "--slo-config",
        str(PRESETS),
        "--slo-scale",
        "gpu",
        "--profile",
        "smollm2-cpu",
        "--length-predictor",
        str(PRESETS),  # any existing file: the fake job does not read it
        "--model",
        "m.gguf",
        "--slots",
        "3",
        "--resume",
        "--on-bad-rows",
        "skip",
        "--summary-json",
        "s.json",
        "--report",
        "r.html",
        "--stall-timeout",
        "90",
        "--calibrate",
        "never",
        "--replan",
        "off",
        "--replan-every",
        "7",
        "--replan-budget",
        "0.5",
        "--replicas",
        "2",
        "--ray-address",
        "auto",
        "--replica-profiles",
        "gpu,cpu",
        "--quiet",
    ]
    result = CliRunner().invoke(cli.batch_main, args)
    assert result.exit_code == 0, result.output
    assert result.output == ""  # --quiet
    (config,) = fake_job.calls
    assert vars(config) == {
        "input": TINY,
        "out": out,
        "engine": "sim",
        "policy": "edf",
        "objective": "attainment",
        "time_budget": 2.5,
        "chains": 12,
        "seed": 7,
        "slo_config": PRESETS,
        "slo_scale": "gpu",
        "profile": "smollm2-cpu",
        "length_predictor": PRESETS,
        "model": Path("m.gguf"),
        "slots": 3,
        "resume": True,
        "on_bad_rows": "skip",
        "summary_json": Path("s.json"),
        "report": Path("r.html"),
        "quiet": True,
        "stall_timeout": 90.0,
        "calibrate": "never",
        "replan": "off",
        "replan_every": 7,
        "replan_budget": 0.5,
        "replicas": 2,
        "ray_address": "auto",
        "replica_profiles": "gpu,cpu",
    }


def test_batch_defaults(tmp_path, fake_job):
    result = CliRunner().invoke(cli.batch_main, [str(TINY), "-o", str(tmp_path / "r.parquet")])
    assert result.exit_code == 0, result.output
    (config,) = fake_job.calls
    assert (config.engine, config.policy, config.objective, config.seed) == (
        "auto",
        "sajax",
        "g",
        0,
    )
    assert config.on_bad_rows == "error" and config.resume is False and config.slo_config is None


def test_auto_engine_leaves_the_scale_to_the_job(tmp_path, fake_job):
    args = [str(TINY), "-o", str(tmp_path / "r.parquet"), "--slo-config", str(PRESETS)]
    assert CliRunner().invoke(cli.batch_main, args).exit_code == 0
    assert fake_job.calls[0].slo_scale is None  # run_job: resolve_slo_scale(None, chosen engine)


def test_turbomind_engine_defaults_to_the_gpu_scale(tmp_path, fake_job):
    args = [str(TINY), "-o", str(tmp_path / "r.parquet"), "--engine", "turbomind"]
    result = CliRunner().invoke(cli.batch_main, [*args, "--slo-config", str(PRESETS)])
    assert result.exit_code == 0, result.output
    assert fake_job.calls[0].slo_scale == "gpu"
    assert "[gpu]" in result.output


def test_skip_writes_rejects_next_to_the_output_and_goes_on(tmp_path, fake_job):
    path = write(
        tmp_path / "in.parquet",
        {"id": ["a", "b", "c"], "prompt": ["x", "", "z"], "slo_e2e_ms": [1.0, 2.0, -3.0]},
    )
    out = tmp_path / "results.parquet"
    result = CliRunner().invoke(
        cli.batch_main, [str(path), "--out", str(out), "--on-bad-rows", "skip"]
    )
    assert result.exit_code == 0, result.output
    rejects = pq.read_table(tmp_path / "results.rejects.parquet")
    assert rejects["id"].to_pylist() == ["b", "c"]
    assert rejects["reject_reason"].to_pylist() == [
        "prompt is an empty string",
        "slo_e2e_ms is negative: -3",  # the offending value is quoted
    ]
    assert "set aside 2 bad rows" in result.output
    assert len(fake_job.calls) == 1


def test_all_rows_rejected_is_exit_2_after_writing_the_rejects(tmp_path, fake_job):
    path = write(tmp_path / "in.parquet", {"prompt": ["", ""]})
    out = tmp_path / "results.parquet"
    result = CliRunner().invoke(
        cli.batch_main, [str(path), "--out", str(out), "--on-bad-rows", "skip"]
    )
    assert result.exit_code == 2
    assert "all 2 rows are invalid" in result.output
    assert pq.read_table(tmp_path / "results.rejects.parquet").num_rows == 2
    assert fake_job.calls == []


def test_bad_preset_file_exits_2(tmp_path, fake_job):
    bad = tmp_path / "p.toml"
    bad.write_text("[chat]\nslo_ttft_ms = -1\n")
    result = CliRunner().invoke(
        cli.batch_main, [str(TINY), "-o", str(tmp_path / "r.parquet"), "--slo-config", str(bad)]
    )
    assert result.exit_code == 2 and str(bad) in result.output and "slo_ttft_ms" in result.output


def test_out_may_not_overwrite_the_input(tmp_path, fake_job):
    path = write(tmp_path / "in.parquet", {"prompt": ["x"]})
    result = CliRunner().invoke(cli.batch_main, [str(path), "--out", str(path)])
    assert result.exit_code == 2 and "would overwrite the input" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--engine", "vllm"],
        ["--slots", "0"],
        ["--time-budget", "0"],
        ["--on-bad-rows", "drop"],
        ["--policy", "x"],
    ],
)
def test_bad_option_values_are_usage_errors(tmp_path, args, fake_job):
    result = CliRunner().invoke(
        cli.batch_main, [str(TINY), "-o", str(tmp_path / "r.parquet"), *args]
    )
    assert result.exit_code == 2 and fake_job.calls == []


def test_job_errors_that_are_user_errors_exit_2(tmp_path, fake_job):
    from batch_runner.errors import OutputError

    def run_job(config, requests=None):
        raise OutputError("cannot write r.parquet (disk full).")

    fake_job.run_job = run_job
    result = CliRunner().invoke(cli.batch_main, [str(TINY), "-o", str(tmp_path / "r.parquet")])
    assert result.exit_code == 2 and "disk full" in result.output


def every_command() -> list[click.Command]:
    return [
        cli.batch_main,
        *(cli.main.commands[name] for name in ("validate", "plan", "calibrate", "report")),
    ]


@pytest.mark.parametrize("command", every_command(), ids=lambda c: c.name)
def test_every_option_has_help(command):
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{command.name} {param.opts} has no help text"
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


# --- sajax validate ---------------------------------------------------------------------------


def test_validate_summarizes_a_good_file():
    result = CliRunner().invoke(cli.main, ["validate", str(TINY), "--slo-config", str(PRESETS)])
    assert result.exit_code == 0, result.output
    assert "12 valid rows, 0 rejected" in result.output
    assert "[cpu]" in result.output


def test_validate_json_counts_slo_coverage():
    result = CliRunner().invoke(
        cli.main,
        ["validate", str(TINY), "--json", "--slo-config", str(PRESETS), "--slo-scale", "gpu"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["rows"] == 12 and summary["rejected"] == {}
    chat = summary["tasks"]["chat"]
    assert chat["rows"] == chat["slo_ttft_ms"] == chat["slo_tpot_ms"] == 3
    assert summary["tasks"]["summarize"]["best_effort"] == 1
    assert summary["total"]["rows"] == sum(t["rows"] for t in summary["tasks"].values())


def test_validate_without_presets_leaves_rows_best_effort():
    summary = json.loads(CliRunner().invoke(cli.main, ["validate", str(TINY), "--json"]).output)
    assert summary["tasks"]["chat"]["slo_ttft_ms"] == 1  # only chat-2 sets its own


@pytest.mark.parametrize("kind", _kinds())
def test_validate_bad_input_exits_2(tmp_path, kind):
    path, word = bad_inputs(tmp_path)[kind]
    result = CliRunner().invoke(cli.main, ["validate", str(path)])
    assert result.exit_code == 2 and word in result.output
    assert isinstance(result.exception, SystemExit)


def test_validate_skip_reports_and_writes_rejects(tmp_path):
    path = write(tmp_path / "in.parquet", {"prompt": ["x", "", ""]})
    rejects = tmp_path / "bad.parquet"
    result = CliRunner().invoke(
        cli.main, ["validate", str(path), "--on-bad-rows", "skip", "--rejects", str(rejects)]
    )
    assert result.exit_code == 0, result.output
    assert "rejected 2: prompt is an empty string" in result.output
    assert pq.read_table(rejects)["reject_row"].to_pylist() == [1, 2]


# --- thin shells over other modules -----------------------------------------------------------


def fake_module(monkeypatch, name: str, function: str) -> list[dict]:
    calls: list[dict] = []
    module = types.ModuleType(name)
    setattr(module, function, lambda **kwargs: calls.append(kwargs))
    monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_plan_passes_its_options(tmp_path, monkeypatch):
    calls = fake_module(monkeypatch, "batch_runner.planning", "plan_command")
    out = tmp_path / "plan.parquet"
    result = CliRunner().invoke(
        cli.main, ["plan", str(TINY), "-o", str(out), "--policy", "fcfs", "--slots", "2"]
    )
    assert result.exit_code == 0, result.output
    (kwargs,) = calls
    assert kwargs["input"] == TINY and kwargs["out"] == out
    assert kwargs["policy"] == "fcfs" and kwargs["slots"] == 2 and kwargs["objective"] == "g"
    assert kwargs["chains"] == "auto"
    assert set(kwargs) == {
        "input",
        "out",
        "engine",
        "policy",
        "objective",
        "time_budget",
        "chains",
        "seed",
        "profile",
        "slots",
        "slo_config",
        "slo_scale",
        "on_bad_rows",
        "summary_json",
        "quiet",
    }


def test_calibrate_and_report_pass_their_options(tmp_path, monkeypatch):
    cal = fake_module(monkeypatch, "batch_runner.calibrate", "calibrate_command")
    rep = fake_module(monkeypatch, "batch_runner.report", "report_command")
    runner = CliRunner()
    args = [
        "calibrate",
        "--engine",
        "sim",
        "--history",
        "a.parquet",
        "--history",
        "b.parquet",
        "-o",
        "p.toml",
    ]
    assert runner.invoke(cli.main, args).exit_code == 0
    assert cal[0]["history"] == (Path("a.parquet"), Path("b.parquet")) and cal[0]["engine"] == "sim"
    assert set(cal[0]) == {"engine", "model", "history", "out", "slots", "seed", "quiet"}
    assert runner.invoke(cli.main, ["report", "r.parquet", "-o", "r.html"]).exit_code == 0
    assert rep == [{"results": Path("r.parquet"), "out": Path("r.html"), "summary_json": None}]


@pytest.mark.parametrize(
    ("args", "module"),
    [
        (["plan", "x.parquet", "-o", "p.parquet"], "batch_runner.planning"),
        (["calibrate", "-o", "p.toml"], "batch_runner.calibrate"),
        (["report", "r.parquet", "-o", "r.html"], "batch_runner.report"),
        (["workloads", "paper-mix", "--n", "3"], "batch_runner.workloads.cli"),
    ],
)
def test_missing_modules_say_not_available_yet(monkeypatch, args, module):
    monkeypatch.setitem(sys.modules, module, None)
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 1 and "not available yet" in result.output
    assert isinstance(result.exception, SystemExit)


def test_workloads_group_is_attached_lazily(monkeypatch):
    module = types.ModuleType("batch_runner.workloads.cli")
    seen = []

    @click.group()
    def workloads():
        """Build request files."""

    @workloads.command("paper-mix")
    @click.option("--n", type=int)
    def paper_mix(n):
        seen.append(n)

    module.workloads = workloads
    monkeypatch.setitem(sys.modules, "batch_runner.workloads.cli", module)
    result = CliRunner().invoke(cli.main, ["workloads", "paper-mix", "--n", "5"])
    assert result.exit_code == 0, result.output
    assert seen == [5]
    assert "workloads" in CliRunner().invoke(cli.main, ["--help"]).output


def test_run_is_sajax_batch(tmp_path, fake_job):
    result = CliRunner().invoke(cli.main, ["run", str(TINY), "-o", str(tmp_path / "r.parquet")])
    assert result.exit_code == 0, result.output
    assert len(fake_job.calls) == 1 and fake_job.calls[0].out == tmp_path / "r.parquet"


# --- the installed console scripts ------------------------------------------------------------


def console_script(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e . --no-deps)")
    return found


@pytest.mark.parametrize(
    "kind",
    ["missing", "text", "corrupt_body", "duplicate id", "nan slo", "prompt as int", "empty file"],
)
def test_installed_sajax_batch_exits_2_without_traceback(tmp_path, kind):
    path, word = bad_inputs(tmp_path)[kind]
    proc = subprocess.run(
        [console_script("sajax-batch"), str(path), "--out", str(tmp_path / "out.parquet")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: ") and word in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one paragraph
    assert not (tmp_path / "out.parquet").exists()


def test_installed_sajax_validate_runs(tmp_path):
    proc = subprocess.run(
        [console_script("sajax"), "validate", str(TINY), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 12


def test_a_broken_workloads_module_does_not_break_help(monkeypatch):
    def broken(name):
        raise ImportError("No module named 'some_dependency'")

    monkeypatch.setattr(cli, "_optional_module", broken)
    runner = CliRunner()
    assert runner.invoke(cli.main, ["--help"]).exit_code == 0
    result = runner.invoke(cli.main, ["workloads", "anything"])
    assert result.exit_code == 1 and "some_dependency" in result.output


@pytest.mark.parametrize("bad", ["0", "many"])
def test_batch_refuses_bad_chains(tmp_path, fake_job, bad):
    args = [str(TINY), "-o", str(tmp_path / "r.parquet"), "--chains", bad]
    result = CliRunner().invoke(cli.batch_main, args)
    assert result.exit_code == 2 and "--chains" in result.output and "auto" in result.output
    assert not fake_job.calls
