"""Reading and validating a large request file: time and peak memory of ``read_requests``.

Builds a synthetic request file (default 1,000,000 rows: prompts of ~200 bytes, three task
kinds, SLO columns partly null, a carried column; optionally 1% bad rows), then runs, each in a
fresh process so that peak RSS is its own:

- ``read_table``: ``pyarrow.parquet.read_table`` of the whole file (the I/O floor);
- ``read_requests``: validation + normalization + presets (``on_bad_rows="error"``, clean file);
- ``read_requests_skip``: the same on the file with bad rows, ``on_bad_rows="skip"``;
- ``write_atomic``: ``write_parquet_atomic`` of the normalized table;
- ``to_pylist``: for scale, the whole file as Python dicts (what ``read_requests`` avoids).

Reported: seconds, peak RSS, and both as ratios to ``read_table`` measured in the same run::

    .venv/bin/python benchmarks/requests_io.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "datasets" / "slo_presets.toml"


def build(path: Path, rows: int, bad_fraction: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "beta", "gamma", "delta", "code", "chat", "label", "token"])
    chunk = 100_000
    with pq.ParquetWriter(path, _schema(), compression="zstd") as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            base = words[rng.integers(0, len(words), size=n)].astype(object)
            prompt = pa.array(
                base + " " + np.arange(start, start + n).astype(str) + " " + "x" * 180
            )
            task = np.array(["code", "chat", "classification"])[rng.integers(0, 3, size=n)]
            e2e = np.where(rng.random(n) < 0.5, rng.uniform(100, 60_000, n), np.nan)
            if bad_fraction:
                bad = rng.random(n) < bad_fraction
                e2e = np.where(bad, -1.0, e2e)
            table = pa.table(
                {
                    "id": pa.array(np.arange(start, start + n).astype(str)),
                    "prompt": prompt,
                    "task": pa.array(task),
                    "slo_e2e_ms": pa.array(e2e, from_pandas=True),  # NaN -> null (= no SLO)
                    "output_tokens_hint": pa.array(rng.integers(1, 400, n)),
                    "source": pa.array(np.full(n, "bench")),
                },
                schema=_schema(),
            )
            writer.write_table(table)


def _schema() -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("task", pa.string()),
            ("slo_e2e_ms", pa.float64()),
            ("output_tokens_hint", pa.int64()),
            ("source", pa.string()),
        ]
    )


def phase(name: str, clean: Path, dirty: Path, out: Path) -> dict:
    from batch_runner.parquet_io import write_parquet_atomic
    from batch_runner.presets import load_presets
    from batch_runner.requests import read_requests

    presets = load_presets(PRESETS, scale="cpu")
    t0 = time.perf_counter()
    if name == "read_table":
        rows = pq.read_table(clean).num_rows
    elif name == "read_requests":
        rows = read_requests(clean, slo_config=presets).table.num_rows
    elif name == "read_requests_skip":
        result = read_requests(dirty, slo_config=presets, on_bad_rows="skip")
        rows = result.table.num_rows
        rejected = result.rejects.num_rows
    elif name == "to_pylist":  # for scale only: what row-by-row Python validation would hold
        rows = len(pq.read_table(clean).to_pylist())
    elif name == "write_atomic":
        table = read_requests(clean, slo_config=presets).table
        t0 = time.perf_counter()
        write_parquet_atomic(table, out)
        rows = table.num_rows
    seconds = time.perf_counter() - t0
    record = {
        "phase": name,
        "rows": rows,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if name == "read_requests_skip":
        record["rejected"] = rejected
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2, help="runs per phase (best is kept)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        clean, dirty, out = map(Path, args.files)
        print(json.dumps(phase(args.phase, clean, dirty, out)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        clean, dirty, out = (
            Path(tmp, "clean.parquet"),
            Path(tmp, "dirty.parquet"),
            Path(tmp, "o.parquet"),
        )
        t0 = time.perf_counter()
        build(clean, args.rows, 0.0)
        build(dirty, args.rows, 0.01)
        print(
            f"built 2 files of {args.rows} rows in {time.perf_counter() - t0:.1f} s "
            f"({clean.stat().st_size / 2**20:.0f} MiB each)"
        )
        arrow_mb = pq.read_table(clean).nbytes / 2**20
        results = {}
        phases = ("read_table", "read_requests", "read_requests_skip", "write_atomic", "to_pylist")
        for name in phases:
            runs = []
            for _ in range(args.repeats):
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--phase",
                        name,
                        "--files",
                        str(clean),
                        str(dirty),
                        str(out),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            results[name] = min(runs, key=lambda r: r["seconds"])
    base = results["read_table"]
    print(
        f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}, "
        f"pyarrow {pa.__version__}; in-memory Arrow size of the clean file: {arrow_mb:.0f} MiB"
    )
    print(f"{'phase':<20}{'rows':>10}{'seconds':>10}{'x read':>8}{'peak RSS MiB':>14}{'x read':>8}")
    for r in results.values():
        print(
            f"{r['phase']:<20}{r['rows']:>10}{r['seconds']:>10.2f}"
            f"{r['seconds'] / base['seconds']:>8.1f}"
            f"{r['peak_rss_mb']:>14.0f}{r['peak_rss_mb'] / base['peak_rss_mb']:>8.2f}"
            + (f"  rejected {r['rejected']}" if "rejected" in r else "")
        )


if __name__ == "__main__":
    main()
