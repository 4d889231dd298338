"""What a request file holds, per task: rows, SLO coverage, output budget (for the CLI's report).

A row is *covered* by an SLO kind when its (preset-filled) SLO cell is not null; a row with no
SLO at all is best-effort (it counts in latency, not in attainment). Counts are exact Python
integers (the token total is summed as a decimal, so it never wraps)::

    summary = summarize_requests(read_requests(path).table)
    print(format_summary(summary))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_runner.requests import SLO_COLUMNS


def summarize_requests(table: pa.Table) -> dict[str, Any]:
    """Counts over the normalized request table; a JSON-ready dict (tasks in order of size)."""
    has = {name: pc.is_valid(table[name]) for name in SLO_COLUMNS}
    any_slo = pc.or_(pc.or_(has["slo_e2e_ms"], has["slo_ttft_ms"]), has["slo_tpot_ms"])
    flags = pa.table(
        {
            "task": table["task"],
            "rows": pa.array(np.ones(table.num_rows, dtype=np.int64)),
            **{name: pc.cast(mask, pa.int64()) for name, mask in has.items()},
            "best_effort": pc.cast(pc.invert(any_slo), pa.int64()),
            "with_hint": pc.cast(pc.is_valid(table["output_tokens_hint"]), pa.int64()),
            "with_messages": pc.cast(pc.is_valid(table["messages"]), pa.int64()),
            # decimal: a sum that cannot wrap, whatever table it is given (int64 would)
            "max_new_tokens": pc.cast(table["max_new_tokens"], pa.decimal128(38, 0)),
        }
    )
    sums = [c for c in flags.column_names if c != "task"]
    grouped = flags.group_by("task").aggregate([(c, "sum") for c in sums])
    tasks = {}
    for row in grouped.to_pylist():  # one row per task: a handful
        tasks[row["task"]] = {c: int(row[f"{c}_sum"] or 0) for c in sums}
    tasks = dict(sorted(tasks.items(), key=lambda kv: (-kv[1]["rows"], kv[0])))
    total = {c: sum(t[c] for t in tasks.values()) for c in sums}
    return {"rows": table.num_rows, "tasks": tasks, "total": total}


def format_summary(summary: dict[str, Any]) -> str:
    """A small text table: one line per task, then the total."""
    header = (
        f"{'task':<18}{'rows':>8}{'e2e SLO':>9}{'TTFT SLO':>10}{'TPOT SLO':>10}{'no SLO':>8}"
        f"{'max tokens':>12}"
    )
    lines = [header]
    rows = [*summary["tasks"].items(), ("total", summary["total"])]
    for name, t in rows:
        lines.append(
            f"{name[:17]:<18}{t['rows']:>8}{t['slo_e2e_ms']:>9}{t['slo_ttft_ms']:>10}"
            f"{t['slo_tpot_ms']:>10}{t['best_effort']:>8}{t['max_new_tokens']:>12}"
        )
    return "\n".join(lines)


def describe_requests(requests, presets=None) -> str:
    """What both commands print about a read file (a ``RequestFile``): rows, presets, one line
    per input column kept under another name, then the ``format_summary`` table."""
    rejected = 0 if requests.rejects is None else requests.rejects.num_rows
    source = (
        f"SLO presets: {presets.source} [{presets.scale or 'flat'}]"
        if presets is not None
        else "SLO presets: none (rows keep their own SLOs)"
    )
    head = f"{requests.source}: {requests.table.num_rows} valid rows, {rejected} rejected; {source}"
    lines = [head, *requests.notices, format_summary(summarize_requests(requests.table))]
    return "\n".join(lines)
