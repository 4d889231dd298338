"""What earlier results files teach (``sajax calibrate --history``): per-task output-length
distributions, and the engine model refitted from per-request timings (one job at a time, with
``schedule_basis``: see ``batch_runner.calibrate_fit``).

    table = read_history([Path("out/results.parquet")])
    predictor = fit_output_lengths(table)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_runner.calibrate_fit import IterationFit, _fit, schedule_basis
from batch_runner.errors import InputError
from batch_runner.output_lengths import OutputLengthPredictor, fit_length_distribution


def read_history(paths: Sequence[Path]) -> pa.Table:
    """The results files concatenated (columns common to all of them)."""
    tables = []
    for path in paths:
        try:
            t = pq.read_table(path)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{path}: cannot read the results file ({e}).", path=path) from e
        if "output_tokens" not in t.column_names:
            raise InputError(f"{path}: not a results file (no output_tokens column).", path=path)
        tables.append(t.append_column("_file", pa.array([str(path)] * t.num_rows)))
    common = set.intersection(*(set(t.column_names) for t in tables))
    keep = [c for c in tables[0].column_names if c in common]
    return pa.concat_tables([t.select(keep) for t in tables], promote_options="permissive")


def fit_output_lengths(table: pa.Table) -> OutputLengthPredictor:
    """Per-task distributions from finished rows (``error`` null, ``output_tokens`` >= 1)."""
    ok = pc.is_null(table.column("error")) if "error" in table.column_names else None
    t = table.filter(ok) if ok is not None else table
    tasks = t.column("task").fill_null("default").to_pylist() if "task" in t.column_names else None
    tasks = np.asarray(tasks or ["default"] * t.num_rows, dtype=object)
    out = pc.cast(t.column("output_tokens"), pa.float64()).fill_null(np.nan).to_numpy()
    capped = (
        np.asarray(
            pc.equal(t.column("finish_reason"), "length")
            .fill_null(False)
            .to_numpy(zero_copy_only=False),
            bool,
        )
        if "finish_reason" in t.column_names
        else np.zeros(t.num_rows, bool)
    )
    dists = {}
    for task in sorted(set(tasks.tolist()), key=str):
        sel = (tasks == task) & np.isfinite(out) & (out >= 1)
        if sel.any():
            dists[str(task)] = fit_length_distribution(out[sel], capped[sel])
    if not dists:
        raise InputError("the history has no finished rows with output_tokens to learn from.")
    return OutputLengthPredictor(tasks=dists)


def fit_history_timings(table: pa.Table, *, slots: int, token_budget: int) -> IterationFit | None:
    """Refit (a, b, c) from per-request timings, one results file (one job) at a time."""
    need = {"rank", "input_tokens", "output_tokens", "ttft_ms", "e2e_ms", "_file"}
    if not need <= set(table.column_names):
        return None
    xs, ys = [], []
    for path in sorted(set(table.column("_file").to_pylist())):
        t = table.filter(pc.equal(table.column("_file"), path))
        if "engine" in t.column_names and set(t.column("engine").to_pylist()) == {"sim"}:
            continue  # simulated timings say nothing about a real engine
        ok = pc.and_(pc.is_valid(t.column("e2e_ms")), pc.is_valid(t.column("rank")))
        t = t.filter(ok)
        if t.num_rows < 2:
            continue
        rank = t.column("rank").to_numpy()
        order = np.argsort(rank, kind="stable")
        inp = pc.cast(t.column("input_tokens"), pa.int64()).fill_null(1).to_numpy()
        outp = pc.cast(t.column("output_tokens"), pa.int64()).fill_null(1).to_numpy()
        bf, bl = schedule_basis(
            order, inp, np.maximum(outp, 1), slots=slots, token_budget=token_budget
        )
        xs += [bf, bl]
        ys += [t.column("ttft_ms").to_numpy(), t.column("e2e_ms").to_numpy()]
    if not xs:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
    return _fit(x[ok], y[ok]) if ok.sum() >= 3 else None
