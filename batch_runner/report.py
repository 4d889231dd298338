"""The HTML report of a results file: one self-contained page of plots and tables.

Every image is a matplotlib PNG inlined as base64 (``<img src="data:image/png;base64,...">``), so
the file can be mailed or archived alone. Sections:

1. summary table: rows, errors, attainment, G, latency percentiles, plan vs FCFS (predicted);
2. attainment per task: measured, planned (predicted e2e against an e2e-only SLO), and the
   planner's predicted plan / FCFS attainment over all rows when the summary carries them;
3. latency CDFs per task and SLO metric (TTFT, TPOT, e2e), each with its SLO as a line;
4. timeline: each request from first token to finish by plan rank (misses marked), and the
   number of requests generating at each moment;
5. predicted vs measured e2e (the engine model's accuracy), with the y = x line;
6. with the closed loop (a job's summary): predicted attainment over the job's time next to the
   measured one, re-plans marked (``batch_runner.report_loop``), and the table of re-plans.

Attainment uses ``sajax.metrics`` (the one definition): a row meets its SLO when every SLO given
holds; rows without an SLO are best-effort and count nowhere in attainment; error rows are
misses. ::

    write_report("results.parquet", summary, "report.html")
    sajax report results.parquet --out report.html

Modules: ``batch_runner.report_data`` (the results columns as arrays),
``batch_runner.report_plots`` (the figures); this one writes the page and its tables.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from batch_runner.errors import OutputError
from batch_runner.report_data import NEEDED, SLO_METRICS, ReportData, _read_results
from batch_runner.report_plots import (
    COLORS,
    MAX_TIMELINE_ROWS,
    _img,
    plot_attainment,
    plot_cdfs,
    plot_prediction,
    plot_timeline,
)
from sajax import metrics


def write_report(
    results_path: str | os.PathLike, summary: dict | None, report_path: str | os.PathLike
) -> Path:
    """Write the HTML report of ``results_path`` (with the job ``summary``, if any)."""
    results_path, report_path = Path(results_path), Path(report_path)
    table = _read_results(results_path)
    data = ReportData(table)
    summary = summary or {}
    sections = [
        ("Summary", _summary_html(data, summary)),
        ("SLO attainment per task", _img(plot_attainment(data, summary))),
        ("Latency distributions against the SLOs", _img(plot_cdfs(data))),
        ("Timeline", _img(plot_timeline(data))),
        ("Predicted vs measured end-to-end latency", _img(plot_prediction(data))),
    ]
    if summary.get("closed_loop"):
        from batch_runner.report_loop import plot_closed_loop, replans_html

        loop = summary["closed_loop"]
        sections += [
            ("Closed loop: predicted and measured attainment", _img(plot_closed_loop(data, loop))),
            ("Re-plans", replans_html(loop)),
        ]
    from batch_runner.report_replicas import replica_sections

    sections += replica_sections(table, summary)  # [] unless the job ran on --replicas
    body = "\n".join(f"<h2>{html.escape(t)}</h2>\n{content}" for t, content in sections)
    title = f"sajax report: {results_path.name}"
    page = _PAGE.format(title=html.escape(title), source=html.escape(str(results_path)), body=body)
    try:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = report_path.with_name(f".{report_path.name}.{os.getpid()}.tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, report_path)
    except OSError as e:
        raise OutputError(f"cannot write the report {report_path} ({e}).", path=report_path) from e
    return report_path


def report_command(
    results: Path, out: Path, summary_json: Path | None = None, **_: Any
) -> dict[str, Any]:
    """``sajax report RESULTS --out report.html``: the summary is recomputed from the file (the
    planner's predictions for FCFS are only in a job's own summary: ``sajax-batch --report``)."""
    from batch_runner.results import summarize

    summary = summarize(_read_results(Path(results)))
    write_report(results, summary, out)
    if summary_json is not None:
        Path(summary_json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


# -- tables ------------------------------------------------------------------------------------


def _summary_html(data: ReportData, summary: dict) -> str:
    overall = [
        ("rows", data.n),
        ("errors", int(data.error.sum())),
        ("rows with an SLO", int(data.has_slo.sum())),
        ("SLO attainment", _pct(metrics.attainment(data.met, data.has_slo, data.weight))),
        ("G (SLO hits per second of summed latency)", f"{_goodput(data):.4f} /s"),
        (
            "makespan",
            f"{np.nanmax(data.cols['e2e_ms']) / 1e3:.1f} s" if (~data.error).any() else "n/a",
        ),
    ]
    for key in ("engine", "profile", "policy", "objective", "plan_time_s", "wall_s", "input"):
        if key in summary:
            value = summary[key]
            overall.append((key, f"{value:.1f} s" if key.endswith("_s") else value))
    plan = summary.get("plan") or {}
    for key, label in (
        ("attainment", "plan: predicted attainment"),
        ("fcfs_attainment", "FCFS: predicted attainment"),
        ("mean_e2e_ms", "plan: predicted mean e2e"),
        ("fcfs_mean_e2e_ms", "FCFS: predicted mean e2e"),
        ("inflight_cap", "plan: in-flight cap"),
    ):
        if isinstance(plan.get(key), int | float):
            v = plan[key]
            overall.append(
                (
                    label,
                    _pct(v)
                    if "attainment" in key
                    else f"{v / 1e3:.1f} s"
                    if key.endswith("_ms")
                    else v,
                )
            )
    head = (
        "<table class='kv'>"
        + "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in overall
        )
        + "</table>"
    )

    cols = ["task", "rows", "errors", "with SLO", "attainment", "SLOs"]
    for label in ("TTFT s", "TPOT ms", "e2e s"):
        cols += [f"{label} p50", f"{label} p99"]
    lines = []
    for task in [*data.tasks, "all"]:
        sel = np.ones(data.n, bool) if task == "all" else data.task == task
        ok = sel & ~data.error
        cells = [
            task,
            int(sel.sum()),
            int((sel & data.error).sum()),
            int((sel & data.has_slo).sum()),
            _pct(metrics.attainment(data.met[sel], data.has_slo[sel], data.weight[sel]))
            if (sel & data.has_slo).any()
            else "best-effort",
            _slo_text(data, sel) if task != "all" else "",
        ]
        for col, _, _, scale, _ in SLO_METRICS:
            v = data.cols[col][ok] * scale
            v = v[np.isfinite(v)]
            cells += [f"{np.percentile(v, p):.2f}" if v.size else "n/a" for p in (50, 99)]
        lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    per_task = (
        "<table class='grid'><tr>"
        + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        + "</tr>"
        + "".join(lines)
        + "</table>"
    )
    return head + "\n<h3>Per task</h3>\n" + per_task


def _goodput(data: ReportData) -> float:
    ok = ~data.error
    e2e = data.cols["e2e_ms"][ok]
    return float(metrics.goodput(data.met[ok], data.has_slo[ok], e2e, data.weight[ok]))


def _slo_text(data: ReportData, sel: np.ndarray) -> str:
    parts = []
    for _, slo_col, label, scale, unit in SLO_METRICS:
        v = data.cols[slo_col][sel]
        v = np.unique(v[np.isfinite(v)])
        if v.size == 1:
            parts.append(f"{label.split()[0]} ≤ {v[0] * scale:g} {unit}")
        elif v.size > 1:
            parts.append(f"{label.split()[0]} ≤ {v.min() * scale:g}–{v.max() * scale:g} {unit}")
    return ", ".join(parts) or "none"


def _pct(x) -> str:
    return f"{100 * float(x):.1f}%"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto;
       max-width: 1100px; color: #222; padding: 0 16px; }}
h1 {{ font-size: 1.5em; margin-bottom: 0; }}
h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
.source {{ color: #666; font-size: 0.9em; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }}
th, td {{ padding: 3px 10px; text-align: left; }}
table.kv th {{ color: #555; font-weight: normal; }}
table.grid th, table.grid td {{ border: 1px solid #ddd; text-align: right; }}
table.grid td:first-child {{ text-align: left; font-weight: 600; }}
table.grid tr:last-child {{ background: #f4f4f4; }}
img {{ max-width: 100%; height: auto; display: block; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="source">results: {source}</p>
{body}
</body></html>
"""


__all__ = [
    "COLORS",
    "MAX_TIMELINE_ROWS",
    "NEEDED",
    "SLO_METRICS",
    "ReportData",
    "plot_attainment",
    "plot_cdfs",
    "plot_prediction",
    "plot_timeline",
    "report_command",
    "write_report",
]
