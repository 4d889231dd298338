"""The HTML report of a results file: one self-contained page of plots and tables.

Every image is a matplotlib PNG inlined as base64 (``<img src="data:image/png;base64,...">``), so
the file can be mailed or archived alone. Sections:

1. summary table: rows, errors, attainment, G, latency percentiles, plan vs FCFS (predicted);
2. attainment per task: measured, planned (predicted e2e against an e2e-only SLO), and the
   planner's predicted plan / FCFS attainment over all rows when the summary carries them;
3. latency CDFs per task and SLO metric (TTFT, TPOT, e2e), each with its SLO as a line;
4. timeline: each request from first token to finish by plan rank (misses marked), and the
   number of requests generating at each moment;
5. predicted vs measured e2e (the engine model's accuracy), with the y = x line.

Attainment uses ``sajax.metrics`` (the one definition): a row meets its SLO when every SLO given
holds; rows without an SLO are best-effort and count nowhere in attainment; error rows are
misses. ::

    write_report("results.parquet", summary, "report.html")
    sajax report results.parquet --out report.html
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from batch_runner.errors import InputError, OutputError  # noqa: E402
from sajax import metrics  # noqa: E402

SLO_METRICS = (  # (column, SLO column, label, unit scale: ms -> shown unit, unit)
    ("ttft_ms", "slo_ttft_ms", "TTFT", 1e-3, "s"),
    ("tpot_ms", "slo_tpot_ms", "TPOT", 1.0, "ms"),
    ("e2e_ms", "slo_e2e_ms", "end-to-end latency", 1e-3, "s"),
)
NEEDED = ("ttft_ms", "tpot_ms", "e2e_ms", "slo_met", "output_tokens", "error")
MAX_TIMELINE_ROWS = 1500  # above this, the per-request timeline shows an even sample of rows
COLORS = plt.get_cmap("tab10").colors


class ReportData:
    """The results columns the plots need, as NumPy arrays (NaN for nulls)."""

    def __init__(self, table: pa.Table):
        n = table.num_rows
        self.n = n
        self.task = np.asarray(
            table.column("task").fill_null("default").to_pylist()
            if "task" in table.column_names
            else ["default"] * n,
            dtype=object,
        )
        self.tasks = sorted(set(self.task.tolist()), key=str)
        self.error = table.column("error").is_valid().to_numpy(zero_copy_only=False)
        self.cols = {
            name: _floats(table, name)
            for name in (
                "ttft_ms",
                "tpot_ms",
                "e2e_ms",
                "predicted_e2e_ms",
                "slo_e2e_ms",
                "slo_ttft_ms",
                "slo_tpot_ms",
                "output_tokens",
                "rank",
                "submit_ms",
            )
        }
        self.weight = np.nan_to_num(_floats(table, "weight"), nan=1.0)
        m = metrics.slo_metrics(
            self.cols["ttft_ms"],
            self.cols["e2e_ms"],
            np.nan_to_num(self.cols["output_tokens"]),
            self.cols["slo_e2e_ms"],
            self.cols["slo_ttft_ms"],
            self.cols["slo_tpot_ms"],
        )
        self.has_slo = np.asarray(m.has_slo, bool)
        # Measured outcome as the results file states it (errors are misses).
        self.met = table.column("slo_met").fill_null(False).to_numpy(zero_copy_only=False)
        self.met = np.asarray(self.met, bool) & ~self.error


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


# -- plots -------------------------------------------------------------------------------------


def plot_attainment(data: ReportData, summary: dict) -> plt.Figure:
    """Bars per task: measured attainment, planned (where predictable), FCFS (predicted)."""
    groups = [*data.tasks, "all"]
    measured, planned = [], []
    for g in groups:
        sel = np.ones(data.n, bool) if g == "all" else data.task == g
        measured.append(
            float(metrics.attainment(data.met[sel], data.has_slo[sel], data.weight[sel]))
            if data.has_slo[sel].any()
            else np.nan
        )
        planned.append(_planned_attainment(data, sel))
    plan = summary.get("plan") or {}
    if isinstance(plan.get("attainment"), int | float):
        planned[-1] = float(plan["attainment"])
    fcfs = [np.nan] * len(groups)
    if isinstance(plan.get("fcfs_attainment"), int | float):
        fcfs[-1] = float(plan["fcfs_attainment"])

    fig, ax = plt.subplots(figsize=(9, 4.2))
    x = np.arange(len(groups))
    series = [("measured", measured, COLORS[0]), ("plan (predicted)", planned, COLORS[1])]
    if np.isfinite(fcfs).any():
        series.append(("FCFS (predicted)", fcfs, COLORS[7]))
    width = 0.8 / len(series)
    for i, (label, values, color) in enumerate(series):
        v = np.asarray(values, float)
        bars = ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            np.nan_to_num(v),
            width,
            label=label,
            color=color,
        )
        for bar, value in zip(bars, v, strict=True):
            if np.isnan(value) and label.startswith("FCFS"):
                continue  # known for "all" only; one "n/a" per group is enough
            text = "n/a" if np.isnan(value) else f"{100 * value:.0f}%"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(
        x, [f"{g}\n({int((data.task == g).sum()) if g != 'all' else data.n} rows)" for g in groups]
    )
    ax.set_ylim(0, 1.12)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_ylabel("SLO attainment (weighted, rows with an SLO)")
    ax.set_title("SLO attainment per task")
    ax.legend(loc="upper left", ncols=len(series), fontsize=9, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_cdfs(data: ReportData) -> plt.Figure:
    """One panel per (task, SLO metric): the empirical CDF and the SLO as a vertical line."""
    panels = []
    for task in data.tasks:
        sel = (data.task == task) & ~data.error
        shown = [spec for spec in SLO_METRICS if np.isfinite(data.cols[spec[1]][sel]).any()] or [
            SLO_METRICS[2]
        ]
        panels += [(task, spec, sel) for spec in shown]
    ncols = min(3, max(1, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    for ax, (task, (col, slo_col, label, scale, unit), sel) in zip(axes.flat, panels, strict=False):
        values = np.sort(data.cols[col][sel][np.isfinite(data.cols[col][sel])]) * scale
        color = COLORS[data.tasks.index(task) % len(COLORS)]
        if values.size:
            ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", color=color)
        slos = data.cols[slo_col][sel]
        slos = np.unique(slos[np.isfinite(slos)]) * scale
        for k, s in enumerate(slos[:3]):
            within = float(np.mean(values <= s)) if values.size else 0.0
            ax.axvline(
                s,
                color="crimson",
                ls="--",
                lw=1.2,
                label=f"SLO {s:g} {unit} ({100 * within:.0f}% within)" if k == 0 else None,
            )
        ax.set_title(f"{task}: {label}", fontsize=10)
        ax.set_xlabel(f"{label} ({unit})")
        ax.set_ylabel("share of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if slos.size:
            ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Latency CDFs per task (measured, from job start)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_timeline(data: ReportData) -> plt.Figure:
    """Per request: a line from first token to finish at its plan rank; below, the count of
    requests generating (first token <= t < finish) over time."""
    first, finish = data.cols["ttft_ms"] / 1e3, data.cols["e2e_ms"] / 1e3
    rank = data.cols["rank"]
    rank = np.where(np.isfinite(rank), rank, np.arange(data.n))
    ok = np.isfinite(first) & np.isfinite(finish)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    rows = np.flatnonzero(ok)
    if rows.size > MAX_TIMELINE_ROWS:
        rows = rows[np.linspace(0, rows.size - 1, MAX_TIMELINE_ROWS).astype(int)]
    submit = data.cols["submit_ms"] / 1e3
    for k, task in enumerate(data.tasks):
        r = rows[data.task[rows] == task]
        color = COLORS[k % len(COLORS)]
        if np.isfinite(submit[r]).any():
            top.hlines(rank[r], submit[r], first[r], color=color, alpha=0.25, lw=1)
        top.hlines(rank[r], first[r], finish[r], color=color, lw=2.4, label=task)
        missed = r[data.has_slo[r] & ~data.met[r]]
        top.plot(finish[missed], rank[missed], "x", color="black", ms=3.5, mew=0.8)
    top.plot([], [], "x", color="black", label="SLO missed")
    top.invert_yaxis()
    top.set_ylabel("plan rank (submission order)")
    top.set_title("Requests from first token to finish (x: SLO missed)")
    # Rank grows with time, so the lines run from top left to bottom right: top right is free.
    top.legend(fontsize=8, loc="upper right", ncols=min(4, len(data.tasks) + 1))
    top.grid(alpha=0.3)

    if ok.any():
        t = np.linspace(0, float(np.nanmax(finish[ok])), 600)
        generating = np.searchsorted(np.sort(first[ok]), t, side="right") - np.searchsorted(
            np.sort(finish[ok]), t, side="right"
        )
        done = np.searchsorted(np.sort(finish[ok]), t, side="right")
        bottom.fill_between(t, generating, step="post", color=COLORS[0], alpha=0.35, lw=0)
        bottom.step(t, generating, where="post", color=COLORS[0], lw=0.6)
        twin = bottom.twinx()
        twin.plot(t, done, color=COLORS[3], lw=1, label="finished (cumulative)")
        twin.set_ylabel("finished", color=COLORS[3])
    bottom.set_xlabel("time from job start (s)")
    bottom.set_ylabel("generating")
    bottom.set_title("Requests in flight", fontsize=10)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_prediction(data: ReportData) -> plt.Figure:
    """Predicted vs measured e2e per request, coloured by task, with y = x."""
    pred, meas = data.cols["predicted_e2e_ms"] / 1e3, data.cols["e2e_ms"] / 1e3
    ok = np.isfinite(pred) & np.isfinite(meas)
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    if ok.any():
        for k, task in enumerate(data.tasks):
            sel = ok & (data.task == task)
            ax.scatter(
                meas[sel], pred[sel], s=10, alpha=0.7, color=COLORS[k % len(COLORS)], label=task
            )
        hi = float(max(pred[ok].max(), meas[ok].max())) * 1.05
        ax.plot([0, hi], [0, hi], color="gray", ls="--", lw=1, label="y = x")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        err = np.abs(pred[ok] - meas[ok])
        ax.set_title(
            f"Predicted vs measured e2e (mean |error| {err.mean():.2f} s, "
            f"{100 * np.mean(err / np.maximum(meas[ok], 1e-9)):.0f}%)",
            fontsize=10,
        )
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no predicted_e2e_ms in this results file", ha="center", va="center")
        ax.set_title("Predicted vs measured e2e")
    ax.set_xlabel("measured end-to-end latency (s)")
    ax.set_ylabel("predicted end-to-end latency (s)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# -- tables and helpers --------------------------------------------------------------------------


def _planned_attainment(data: ReportData, sel: np.ndarray) -> float:
    """Predicted attainment of rows whose only SLO is e2e (the results carry only predicted
    e2e); NaN when the group has such no rows or any row with a TTFT/TPOT SLO."""
    e2e_only = (
        np.isfinite(data.cols["slo_e2e_ms"])
        & ~np.isfinite(data.cols["slo_ttft_ms"])
        & ~np.isfinite(data.cols["slo_tpot_ms"])
    )
    other = data.has_slo & ~e2e_only
    pred = data.cols["predicted_e2e_ms"]
    if (other & sel).any() or not (e2e_only & sel & np.isfinite(pred)).any():
        return np.nan
    s = sel & e2e_only & np.isfinite(pred)
    met = pred[s] <= data.cols["slo_e2e_ms"][s]
    return float(metrics.attainment(met, np.ones(met.shape, bool), data.weight[s]))


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


def _img(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = pc.cast(table.column(name), pa.float64())
    return col.fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float64)


def _read_results(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: cannot read the results file ({e}).", path=path) from e
    missing = [c for c in NEEDED if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: not a sajax results file (missing {', '.join(missing)}).", path=path
        )
    return table


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
