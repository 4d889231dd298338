"""The closed loop in the HTML report: predicted attainment over the job's time next to the
measured one, with the re-plans marked, and the table of re-plans.

The measured curve at time t is the weighted share of the rows with an SLO that finished by t
and met it (so it ends at the job's attainment). Each predicted curve is the job summary's
``closed_loop.curves`` entry: made at the plan (t = 0) or at a re-plan, it is the rows done by
then (measured) plus the predicted hits by each later time; a re-plan is a vertical line.

    fig = plot_closed_loop(data, summary["closed_loop"])
    html = replans_html(summary["closed_loop"])
"""

from __future__ import annotations

import html

import numpy as np


def measured_curve(e2e_ms, met, has_slo, weight) -> list[tuple[float, float]]:
    """[(t_s, cumulative measured attainment)] at each hit's finish."""
    e2e = np.asarray(e2e_ms, np.float64)
    has = np.asarray(has_slo, bool)
    w = np.asarray(weight, np.float64)
    total = float(np.sum(w[has])) or 1.0
    hits = np.asarray(met, bool) & has & np.isfinite(e2e)
    order = np.argsort(e2e[hits], kind="stable")
    t = e2e[hits][order] / 1000.0
    cum = np.cumsum(w[hits][order]) / total
    pts = [(0.0, 0.0)] + [(float(a), float(b)) for a, b in zip(t, cum, strict=True)]
    if np.isfinite(e2e).any():  # flat to the job's last finish
        pts.append((float(np.nanmax(np.where(np.isfinite(e2e), e2e, np.nan))) / 1000.0, pts[-1][1]))
    return pts


def plot_closed_loop(data, loop: dict):
    """The figure (module doc); ``data`` is a ``batch_runner.report_data.ReportData``."""
    import matplotlib.pyplot as plt

    from batch_runner.report_plots import COLORS

    fig, ax = plt.subplots(figsize=(9, 4.2))
    pts = measured_curve(data.cols["e2e_ms"], data.met, data.has_slo, data.weight)
    xs, ys = zip(*pts, strict=True)
    ax.step(xs, ys, where="post", color=COLORS[0], lw=2, label="measured")
    for k, curve in enumerate(loop.get("curves") or []):
        cx, cy = zip(*curve["points"], strict=True)
        first = k == 0
        label = "predicted by the plan" if first else "predicted after a re-plan"
        ax.step(
            cx,
            cy,
            where="post",
            color=COLORS[1] if first else COLORS[2 + (k - 1) % 6],
            ls="-" if first else "--",
            lw=1.2,
            label=label if k <= 1 else None,
        )
    for r in loop.get("replans") or []:
        ax.axvline(r["t_s"], color="grey", lw=0.8, ls=":")
        ax.annotate(
            "re-plan" if r.get("changed") else "checked",
            (r["t_s"], 1.02),
            rotation=90,
            fontsize=7,
            ha="right",
            va="bottom",
        )
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("job time (s)")
    ax.set_ylabel("SLO attainment so far (of all rows with an SLO)")
    ax.set_title("Predicted and measured attainment over the job")
    ax.legend(loc="upper left", fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def replans_html(loop: dict) -> str:
    """One table row per re-plan (time, reason, speed factor, predicted attainment before and
    after, whether the order changed)."""
    rows = loop.get("replans") or []
    if not rows:
        return "<p>No re-plan: the measured progress stayed within the thresholds.</p>"
    head = "".join(
        f"<th>{h}</th>"
        for h in ("time (s)", "reason", "speed x", "predicted before", "after", "order", "took")
    )
    body = []
    for r in rows:
        before = r.get("predicted_attainment_before")
        after = r.get("predicted_attainment_after")
        order = "error: " + r["error"] if r.get("error") else ("new" if r["changed"] else "kept")
        body.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    f"{r['t_s']:.1f}",
                    r["reason"],
                    f"{r['speed_scale']:.2f}",
                    "" if before is None else f"{100 * before:.1f}%",
                    "" if after is None else f"{100 * after:.1f}%",
                    order,
                    f"{r.get('plan_time_s', 0.0):.2f} s",
                )
            )
            + "</tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
