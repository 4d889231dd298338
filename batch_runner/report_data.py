"""A results file read for the HTML report (``batch_runner.report``): the columns the plots and
tables need, as NumPy arrays with NaN for nulls (``ReportData``), and the measured SLO outcome.

    data = ReportData(_read_results(Path("results.parquet")))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_runner.errors import InputError
from sajax import metrics

SLO_METRICS = (  # (column, SLO column, label, unit scale: ms -> shown unit, unit)
    ("ttft_ms", "slo_ttft_ms", "TTFT", 1e-3, "s"),
    ("tpot_ms", "slo_tpot_ms", "TPOT", 1.0, "ms"),
    ("e2e_ms", "slo_e2e_ms", "end-to-end latency", 1e-3, "s"),
)
NEEDED = ("ttft_ms", "tpot_ms", "e2e_ms", "slo_met", "output_tokens", "error")


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
