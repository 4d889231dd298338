"""The HTML report: self-contained, every image decodes, the numbers are sajax.metrics'."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batch_runner.report import report_command, write_report
from sajax import metrics


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.headings, self.cells, self._tag = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag = tag
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs)

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if not data.strip():
            return
        if self._tag == "h2":
            self.headings.append(data.strip())
        if self._tag in ("td", "th"):
            self.cells.append(data.strip())


def results_table(n=60, seed=0, errors=2) -> pa.Table:
    rng = np.random.default_rng(seed)
    task = np.array(["code", "chat", "classification"])[rng.integers(0, 3, n)]
    out = rng.integers(2, 80, n)
    first = np.sort(rng.uniform(100, 20_000, n))
    finish = first + out * rng.uniform(20, 60, n)
    slo_e2e = np.where(task == "chat", np.nan, np.where(task == "code", 12_000.0, 6_000.0))
    slo_ttft = np.where(task == "chat", 9_000.0, np.nan)
    slo_tpot = np.where(task == "chat", 45.0, np.nan)
    m = metrics.slo_metrics(first, finish, out, slo_e2e, slo_ttft, slo_tpot)
    error = np.zeros(n, bool)
    error[rng.choice(n, errors, replace=False)] = True
    met = np.asarray(m.met) & ~error
    lat = lambda v: pa.array(np.asarray(v, float), mask=error)  # noqa: E731
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "task": task,
            "slo_e2e_ms": pa.array(slo_e2e, mask=np.isnan(slo_e2e)),
            "slo_ttft_ms": pa.array(slo_ttft, mask=np.isnan(slo_ttft)),
            "slo_tpot_ms": pa.array(slo_tpot, mask=np.isnan(slo_tpot)),
            "weight": np.ones(n),
            "output_tokens": out,
            "error": pa.array(["boom" if e else None for e in error], pa.string()),
            "rank": np.argsort(np.argsort(first)),
            "ttft_ms": lat(m.ttft_ms),
            "tpot_ms": lat(m.tpot_ms),
            "e2e_ms": lat(m.e2e_ms),
            "slo_met": pa.array(met),
            "predicted_e2e_ms": finish * rng.uniform(0.9, 1.1, n),
            "engine": ["sim"] * n,
        }
    )


@pytest.fixture
def results(tmp_path):
    table = results_table()
    path = tmp_path / "results.parquet"
    pq.write_table(table, path)
    return path, table


def test_report_is_self_contained_and_every_image_decodes(results, tmp_path):
    path, table = results
    summary = {"engine": "sim", "plan": {"attainment": 0.8, "fcfs_attainment": 0.4}}
    out = write_report(path, summary, tmp_path / "r" / "report.html")
    page = _Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.links == []  # nothing fetched from elsewhere
    assert len(page.images) == 4
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        image = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05  # not a blank canvas
    assert page.headings == [
        "Summary",
        "SLO attainment per task",
        "Latency distributions against the SLOs",
        "Timeline",
        "Predicted vs measured end-to-end latency",
    ]
    # The table states the attainment that sajax.metrics computes from the file.
    error = table.column("error").is_valid().to_numpy(zero_copy_only=False)
    met = table.column("slo_met").to_numpy(zero_copy_only=False).astype(bool)
    has = np.ones(table.num_rows, bool)
    expected = 100 * float(metrics.attainment(met & ~error, has))
    assert f"{expected:.1f}%" in page.cells
    for task in ("chat", "code", "classification", "all"):
        assert task in page.cells
    assert "80.0%" in page.cells and "40.0%" in page.cells  # plan / FCFS from the summary


def test_report_without_predictions_or_tasks_still_renders(tmp_path):
    table = results_table(n=8, errors=0).drop_columns(["predicted_e2e_ms", "task", "rank"])
    path = tmp_path / "bare.parquet"
    pq.write_table(table, path)
    out = write_report(path, None, tmp_path / "bare.html")
    page = _Page()
    page.feed(out.read_text())
    assert len(page.images) == 4 and "default" in page.cells


def test_report_command_and_bad_input(results, tmp_path):
    path, _ = results
    summary = report_command(path, tmp_path / "a.html", summary_json=tmp_path / "s.json")
    assert (tmp_path / "a.html").stat().st_size > 10_000 and summary["rows"] == 60
    assert (tmp_path / "s.json").is_file()
    not_results = tmp_path / "requests.parquet"
    pq.write_table(pa.table({"id": ["a"], "prompt": ["hi"]}), not_results)
    from batch_runner.errors import InputError

    with pytest.raises(InputError, match="not a sajax results file"):
        write_report(not_results, None, tmp_path / "x.html")


def test_sajax_report_cli(results, tmp_path):
    from batch_runner.cli import main

    path, _ = results
    result = CliRunner().invoke(main, ["report", str(path), "--out", str(tmp_path / "c.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.html").read_text().startswith("<!DOCTYPE html>")
