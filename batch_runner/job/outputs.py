"""Writing what a finished job reports, once its results file is in place: the summary as
strict JSON (``_json_ready``, ``_write_bytes``: atomic) and the HTML report (``_write_report``,
``batch_runner.report``), both by ``write_summary_and_report``; ``final_line`` is what the job
prints last.

Exit code 4 (``ReportWriteError``): the results file is complete and the checkpoint is gone,
but the summary could not be computed or written, or the report not written. The message says
which files were written and which not, and the ``sajax report`` command that writes both from
the results (without the plan's predictions, which only the run itself knows).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa

from batch_runner import results as results_mod

log = logging.getLogger(__name__)

EXIT_RESULTS_ONLY = 4  # the results are written; the summary or the report is not


def _json_ready(value: Any) -> Any:
    """Strict JSON: NaN/inf become null, NumPy scalars Python numbers, keys strings."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_report(results_path: Path, summary: dict, report_path: Path) -> None:
    try:
        from batch_runner.report import write_report
    except ImportError:
        log.warning("the HTML report module is not available yet; no report written")
        return
    write_report(results_path, summary, report_path)


class ReportWriteError(click.ClickException):
    """The results file is complete, but the summary or the report could not be written."""

    exit_code = EXIT_RESULTS_ONLY


def write_summary_and_report(
    results: pa.Table, out: Path, config, extra: dict[str, Any]
) -> dict[str, Any]:
    """After the results are in place at ``out``: the summary (returned; ``--summary-json``)
    and the report (``--report``). Whatever fails here -- a full disk, a bug on some value --
    is a ``ReportWriteError`` (exit 4) that says the results are written, which of the two
    files was written and which not, and the command that writes them from the results."""
    summary_path = Path(config.summary_json) if config.summary_json else None
    report_path = Path(config.report) if config.report else None
    written = [f"{out} ({results.num_rows} rows)"]
    step = "compute the summary"
    try:
        summary = _json_ready(results_mod.summarize(results, **extra))
        if summary_path is not None:
            step = f"write the summary {summary_path}"
            text = json.dumps(summary, indent=2, allow_nan=False, default=str)
            _write_bytes(summary_path, (text + "\n").encode())
            written.append(str(summary_path))
        if report_path is not None:
            step = f"write the report {report_path}"
            _write_report(out, summary, report_path)
            written.append(str(report_path))
    except Exception as exc:
        reason = _describe_error(exc)
        missing = [str(p) for p in (summary_path, report_path) if p and str(p) not in written]
        again = ["sajax", "report", str(out), "--out", str(report_path or "report.html")]
        if summary_path is not None:
            again += ["--summary-json", str(summary_path)]
        raise ReportWriteError(
            f"the results are complete, but could not {step}: {reason}. Written: "
            f"{', '.join(written)}; not written: {', '.join(missing) or 'the summary'}. "
            f"Write them from the results with:\n  {shlex.join(again)}"
        ) from exc
    return summary


def final_line(summary: dict[str, Any], plan_info: dict[str, Any], out: Path) -> str:
    """The one line a finished job prints (a missing number reads n/a, never a crash)."""

    def pct(value) -> str:
        return f"{100 * value:.1f}%" if isinstance(value, int | float) else "n/a"

    predicted = ""
    if all(isinstance(plan_info.get(k), float) for k in ("attainment", "fcfs_attainment")):
        predicted = (
            f" (predicted: plan {pct(plan_info['attainment'])}, "
            f"FCFS {pct(plan_info['fcfs_attainment'])})"
        )
    g = summary.get("G")
    g_text = f"{g:.3f}/s" if isinstance(g, int | float) else "n/a"
    return (
        f"{summary['rows']} rows, {summary['errors']} errors, SLO attainment "
        f"{pct(summary.get('attainment'))}{predicted}, G {g_text} -> {out}"
    )


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, click.ClickException):
        return exc.message
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"
