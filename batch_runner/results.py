"""The output table and the job summary, from the input table and the measurements.

The output is the normalized input table (every input column, input row order) with these
columns appended (DESIGN.md "Output")::

    output_text, input_tokens, output_tokens, finish_reason, error, rank,
    ttft_ms, tpot_ms, e2e_ms, slo_met, predicted_e2e_ms, engine

``ttft_ms``, ``tpot_ms``, ``e2e_ms`` and ``slo_met`` come from ``sajax.metrics.slo_metrics`` --
the one definition shared with the planner. A row that ended in an error has ``error`` set, null
latencies and ``slo_met = False``; a finished row with no SLO at all (best-effort) has
``slo_met`` null. The summary's numbers follow ``sajax.metrics`` too::

    attainment = sum(w * met) / sum(w)          over rows with an SLO (errors count as misses)
    G          = sum(w * met) / sum(e2e in s)   over finished rows

    out = assemble(requests_table, measurements_table)
    summary = summarize(out, engine="sim", profile="default", plan_time_s=0.3)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_runner.request_contract import OUTPUT_COLUMNS, renamed_clashes
from sajax import metrics

log = logging.getLogger(__name__)

SLO_COLUMNS = ("slo_e2e_ms", "slo_ttft_ms", "slo_tpot_ms")


def _floats(table: pa.Table, name: str, default: float = np.nan) -> np.ndarray:
    """A column as float64 with nulls (or a missing column) as ``default``.

    Unchecked cast: an int64 beyond 2**53 becomes the nearest float instead of an error."""
    if name not in table.column_names:
        return np.full(table.num_rows, default, dtype=np.float64)
    col = pc.cast(table.column(name), pa.float64(), safe=False)
    return col.fill_null(default).to_numpy(zero_copy_only=False).astype(np.float64)


def row_slo_met(row: dict[str, Any], first_token_ms: float, finish_ms: float, out_tokens: int):
    """``slo_met`` for one finished row (None when the row has no SLO): for live progress."""
    slos = [row.get(c) for c in SLO_COLUMNS]
    m = metrics.slo_metrics(
        [first_token_ms],
        [finish_ms],
        [out_tokens],
        *([np.nan if s is None else float(s)] for s in slos),
    )
    return bool(m.met[0]) if bool(m.has_slo[0]) else None


def assemble(requests: pa.Table, measurements: pa.Table) -> pa.Table:
    """Join measurements (``checkpoint.MEASUREMENT_SCHEMA``) onto the requests, in input order.

    Raises ValueError when a request has no measurement or a measurement no request.
    """
    ids = requests.column("id").to_pylist()
    position = {rid: i for i, rid in enumerate(ids)}
    m_ids = measurements.column("id").to_pylist()
    unknown = [rid for rid in m_ids if rid not in position]
    if unknown:
        raise ValueError(f"measurements for ids not in the input: {unknown[:5]}")
    index_of = {rid: j for j, rid in enumerate(m_ids)}
    missing = [rid for rid in ids if rid not in index_of]
    if missing:
        raise ValueError(f"{len(missing)} input rows have no result, e.g. {missing[:5]}")
    m = measurements.take(pa.array([index_of[rid] for rid in ids], type=pa.int64()))

    is_error = m.column("error").is_valid().to_numpy(zero_copy_only=False)
    first = _floats(m, "first_token_ms")
    finish = _floats(m, "finish_ms")
    out_tokens = _floats(m, "output_tokens", default=0.0)
    sm = metrics.slo_metrics(
        first, finish, out_tokens, *(_floats(requests, c) for c in SLO_COLUMNS)
    )
    met = np.asarray(sm.met, dtype=bool) & ~is_error
    has_slo = np.asarray(sm.has_slo, dtype=bool)
    valid_met = has_slo | is_error  # errors are misses even without an SLO; best-effort: null

    def latency(values) -> pa.Array:
        v = np.asarray(values, dtype=np.float64)
        return pa.array(v, type=pa.float64(), mask=is_error)

    new = {
        "output_text": m.column("output_text"),
        "input_tokens": m.column("input_tokens"),
        "output_tokens": m.column("output_tokens"),
        "finish_reason": m.column("finish_reason"),
        "error": m.column("error"),
        "rank": m.column("rank"),
        "ttft_ms": latency(sm.ttft_ms),
        "tpot_ms": latency(sm.tpot_ms),
        "e2e_ms": latency(sm.e2e_ms),
        "slo_met": pa.array(met, type=pa.bool_(), mask=~valid_met),
        "predicted_e2e_ms": m.column("predicted_e2e_ms"),
        "engine": m.column("engine"),
    }
    out = requests
    renames = renamed_clashes(out.column_names, OUTPUT_COLUMNS.names)
    if renames:  # read_requests has renamed them already; a table made by hand may not have
        for name, kept in renames.items():
            log.warning("input column %r is kept as %r (the output has its own)", name, kept)
        out = out.rename_columns([renames.get(name, name) for name in out.column_names])
    for field in OUTPUT_COLUMNS:
        out = out.append_column(field, pc.cast(new[field.name], field.type))
    if "replica" in m.column_names and m.column("replica").null_count < m.num_rows:
        # a multi-replica job (--replicas): which replica served each row; an input column of
        # that name is kept as input_replica
        clash = renamed_clashes(out.column_names, ("replica",))
        if clash:
            log.warning("input column 'replica' is kept as %r (the output has its own)", clash)
            out = out.rename_columns([clash.get(name, name) for name in out.column_names])
        out = out.append_column("replica", pc.cast(m.column("replica"), pa.int64()))
    return out


def _stats(values: np.ndarray) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"mean": None, "p50": None, "p99": None}
    return {
        "mean": float(np.mean(v)),
        "p50": float(np.percentile(v, 50)),
        "p99": float(np.percentile(v, 99)),
    }


def summarize(results: pa.Table, **extra: Any) -> dict[str, Any]:
    """Job summary (JSON-ready) from an ``assemble`` output; ``extra`` keys are added as is."""
    n = results.num_rows
    is_error = results.column("error").is_valid().to_numpy(zero_copy_only=False)
    met_col = results.column("slo_met")
    met = met_col.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    has_slo = _has_slo(results)
    weight = _floats(results, "weight", default=1.0)
    e2e = _floats(results, "e2e_ms")
    finished = ~is_error
    tasks = (
        results.column("task").to_pylist() if "task" in results.column_names else ["default"] * n
    )

    per_task: dict[str, dict[str, Any]] = {}
    task_arr = np.asarray(tasks, dtype=object)
    for task in sorted(set(tasks), key=str):
        sel = task_arr == task
        per_task[str(task)] = {
            "rows": int(sel.sum()),
            "errors": int((is_error & sel).sum()),
            "with_slo": int((has_slo & sel).sum()),
            "attainment": float(metrics.attainment(met[sel], has_slo[sel], weight[sel])),
        }

    predicted = _floats(results, "predicted_e2e_ms")
    both = finished & np.isfinite(predicted) & np.isfinite(e2e)
    if both.any():
        abs_err = np.abs(predicted[both] - e2e[both])
        prediction = {
            "rows": int(both.sum()),
            "mean_abs_error_ms": float(np.mean(abs_err)),
            "mean_abs_rel_error": float(np.mean(abs_err / np.maximum(e2e[both], 1e-9))),
            "p99_abs_error_ms": float(np.percentile(abs_err, 99)),
        }
    else:
        prediction = {"rows": 0}

    summary: dict[str, Any] = {
        "rows": n,
        "finished": int(finished.sum()),
        "errors": int(is_error.sum()),
        "with_slo": int(has_slo.sum()),
        "attainment": float(metrics.attainment(met, has_slo, weight)),
        "attainment_per_task": per_task,
        "G": float(
            metrics.goodput(met[finished], has_slo[finished], e2e[finished], weight[finished])
        )
        if finished.any()
        else 0.0,
        "ttft_ms": _stats(_floats(results, "ttft_ms")),
        "tpot_ms": _stats(_floats(results, "tpot_ms")),
        "e2e_ms": _stats(e2e),
        "makespan_ms": float(np.nanmax(e2e)) if finished.any() else 0.0,
        "predicted_e2e_error": prediction,
    }
    summary.update(extra)
    return summary


def _has_slo(results: pa.Table) -> np.ndarray:
    slos = np.stack([_floats(results, c) for c in SLO_COLUMNS])
    return np.isfinite(slos).any(axis=0)
