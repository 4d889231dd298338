"""The plots of the HTML report (``batch_runner.report``): attainment per task, latency CDFs
against the SLOs, the timeline, predicted vs measured e2e; each a matplotlib figure, inlined as
a base64 PNG (``_img``).

    html = _img(plot_cdfs(ReportData(table)))
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from batch_runner.report_data import SLO_METRICS, ReportData  # noqa: E402
from sajax import metrics  # noqa: E402

MAX_TIMELINE_ROWS = 1500  # above this, the per-request timeline shows an even sample of rows
COLORS = plt.get_cmap("tab10").colors


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


def _img(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'
