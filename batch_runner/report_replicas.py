"""The report's replica sections (a results file of ``sajax-batch --replicas N``).

1. A table per replica: rows served, errors, measured and predicted attainment, mean e2e,
   makespan (the replica's last finish), load (summed decode time of its requests), whether it
   died during the job.
2. A timeline per replica (one panel each, shared time axis): requests generating at each
   moment on that replica (first token <= t < finish), and its rows finished so far; the
   replica's SLO misses are marked at their finish time.

Times are those of the results file: each row from the start of the replica that ran it.

    sections = replica_sections(table, summary)      # [(title, html), ...]; [] without replicas
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import pyarrow as pa

MAX_PANELS = 16  # replicas drawn in the timeline (the table lists all)


def replica_sections(table: pa.Table, summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The replica table and timeline, or [] when the results have no ``replica`` column."""
    if "replica" not in table.column_names:
        return []
    from batch_runner.replica_job import replica_summary

    rows = summary.get("replicas") or replica_summary(table, summary.get("plan") or {})
    return [
        ("Replicas", _table(rows)),
        ("Timeline per replica", _timeline(table, len(rows))),
    ]


def _fmt(x, pct: bool = False, scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{100 * x:.1f} %" if pct else f"{x * scale:,.1f}"


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>replica</th><th>rows</th><th>errors</th><th>attainment</th>"
        "<th>predicted</th><th>mean e2e (s)</th><th>makespan (s)</th><th>load (s)</th>"
        "<th>died</th></tr>"
    )
    body = []
    for r in rows:
        cells = (
            str(r["replica"]),
            str(r["rows"]),
            str(r["errors"]),
            _fmt(r.get("attainment"), pct=True),
            _fmt(r.get("predicted_attainment"), pct=True),
            _fmt(r.get("mean_e2e_ms"), scale=1e-3),
            _fmt(r.get("makespan_ms"), scale=1e-3),
            _fmt(r.get("busy_ms"), scale=1e-3),
            "yes" if r.get("died") else "",
        )
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _timeline(table: pa.Table, n_replicas: int) -> str:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10").colors
    rep = np.asarray(
        [-1 if v is None else int(v) for v in table.column("replica").to_pylist()], np.int64
    )
    first = _floats(table, "ttft_ms") / 1e3
    finish = _floats(table, "e2e_ms") / 1e3
    met = np.asarray([bool(v) for v in table.column("slo_met").to_pylist()])
    has = np.asarray([v is not None for v in table.column("slo_met").to_pylist()])
    ok = np.isfinite(first) & np.isfinite(finish)
    panels = max(1, min(n_replicas, MAX_PANELS))
    fig, axes = plt.subplots(panels, 1, figsize=(10, 1.3 + 1.1 * panels), sharex=True)
    axes = np.atleast_1d(axes)
    end = float(np.nanmax(finish[ok])) if ok.any() else 1.0
    t = np.linspace(0, end, 600)
    for j, ax in enumerate(axes):
        sel = ok & (rep == j)
        color = colors[j % len(colors)]
        if sel.any():
            generating = np.searchsorted(np.sort(first[sel]), t, side="right") - np.searchsorted(
                np.sort(finish[sel]), t, side="right"
            )
            ax.fill_between(t, generating, step="post", color=color, alpha=0.35, lw=0)
            ax.step(t, generating, where="post", color=color, lw=0.6)
            miss = sel & has & ~met
            ax.plot(finish[miss], np.zeros(miss.sum()), "x", color="black", ms=3, mew=0.7)
            twin = ax.twinx()
            twin.plot(t, np.searchsorted(np.sort(finish[sel]), t, side="right"), color="0.3", lw=1)
            twin.set_ylabel("done", fontsize=7)
        ax.set_ylabel(f"replica {j}", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title("Requests generating per replica (grey: finished so far; x: SLO missed)")
    axes[-1].set_xlabel("time from the replica's start (s)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="timeline per replica" src="data:image/png;base64,{encoded}">'


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return np.asarray([np.nan if v is None else float(v) for v in table.column(name).to_pylist()])
