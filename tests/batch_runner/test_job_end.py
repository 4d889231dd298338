"""The end of a job cannot lose its work: the results file is written first and stays in place
when the summary or the report fails; the error (exit 4) says what was written and what not.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batch_runner import cli
from batch_runner import results as results_mod
from batch_runner.checkpoint import parts_dir_for
from batch_runner.job import EXIT_RESULTS_ONLY, JobConfig, ReportWriteError, outputs, run_job

N = 6


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "requests.parquet"
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(N)], "slo_e2e_ms": [5e3] * N}), path)
    return path


def _config(src, tmp_path, **kw):
    return JobConfig(
        input=src, out=tmp_path / "results.parquet", engine="sim", policy="fcfs", quiet=True, **kw
    )


def _results_in_place(tmp_path) -> None:
    out = tmp_path / "results.parquet"
    assert pq.read_table(out).num_rows == N
    assert not parts_dir_for(out).exists()  # the results hold every row: nothing to resume


def test_a_summary_that_cannot_be_written_leaves_the_results_and_says_so(src, tmp_path):
    blocked = tmp_path / "summary.json"
    blocked.mkdir()  # a directory where the file should go: the write fails
    report = tmp_path / "report.html"
    with pytest.raises(ReportWriteError) as info:
        run_job(_config(src, tmp_path, summary_json=blocked, report=report))
    assert info.value.exit_code == EXIT_RESULTS_ONLY == 4
    message = info.value.message
    assert f"could not write the summary {blocked}" in message
    assert f"Written: {tmp_path / 'results.parquet'} ({N} rows)" in message
    assert f"not written: {blocked}, {report}" in message
    assert "sajax report" in message and "--summary-json" in message
    _results_in_place(tmp_path)
    assert not report.exists()


def test_a_report_that_fails_leaves_results_and_summary(src, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("the plotting library is missing a font")

    monkeypatch.setattr(outputs, "_write_report", broken)
    summary, report = tmp_path / "s.json", tmp_path / "r.html"
    with pytest.raises(ReportWriteError) as info:
        run_job(_config(src, tmp_path, summary_json=summary, report=report))
    message = info.value.message
    assert "could not write the report" in message and "missing a font" in message
    assert f"{summary}" in message.split("not written")[0]  # written
    assert f"not written: {report}" in message
    assert json.loads(summary.read_text())["rows"] == N
    _results_in_place(tmp_path)


def test_a_summary_that_cannot_be_computed_leaves_the_results(src, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for *: 'int' and 'NoneType'")

    monkeypatch.setattr(results_mod, "summarize", broken)
    with pytest.raises(ReportWriteError, match="could not compute the summary: TypeError"):
        run_job(_config(src, tmp_path, summary_json=tmp_path / "s.json"))
    _results_in_place(tmp_path)


def test_the_command_exits_4_without_a_traceback_and_the_printed_command_works(src, tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    blocked = tmp_path / "not-a-dir" / "summary.json"  # its folder is a file: the write fails
    out = tmp_path / "results.parquet"
    argv = [str(src), "--out", str(out), "--engine", "sim", "--policy", "fcfs", "-q"]
    result = CliRunner().invoke(cli.batch_main, [*argv, "--summary-json", str(blocked)])
    assert result.exit_code == 4, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert "the results are complete" in result.output
    _results_in_place(tmp_path)
    again = CliRunner().invoke(
        cli.main,
        [
            "report",
            str(out),
            "--out",
            str(tmp_path / "r.html"),
            "--summary-json",
            str(tmp_path / "s.json"),
        ],
    )
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "s.json").read_text())["rows"] == N


def test_the_last_line_reads_n_a_for_a_missing_number(tmp_path):
    line = outputs.final_line(
        {"rows": 3, "errors": 0, "attainment": None, "G": None}, {"attainment": 0.5}, tmp_path
    )
    assert "SLO attainment n/a" in line and "G n/a" in line
