"""A/B of ``read_requests`` between two checkouts (e.g. main and a branch): time and peak RSS.

Two files: the ``requests_io`` synthetic prompt file (``--rows``, default 1,000,000) and a chat
file (``--chat-rows``, default 300,000 rows of a four-message chat: system, user, assistant,
user). Each read runs in a fresh process with the checkout first on ``PYTHONPATH``; the
checkouts alternate, ``--rounds`` times; the best time and the lowest peak RSS are kept::

    .venv/bin/python benchmarks/request_contract_ab.py --trees /work/main /work/wt-contract
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import requests_io  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from batch_runner.requests import read_requests
t0 = time.perf_counter(); r = read_requests(sys.argv[1]); dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"s": dt, "rss": rss, "rows": r.table.num_rows}))
"""


def build_chats(path: Path, rows: int) -> None:
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    chat = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "x" * 100},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "more"},
    ]
    schema = pa.schema([("id", pa.string()), ("messages", pa.list_(message))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            ids = pa.array(np.arange(start, start + n).astype(str))
            writer.write_table(pa.table({"id": ids, "messages": pa.array([chat] * n)}, schema))


def read_once(tree: str, path: Path) -> dict:
    env = {"PYTHONPATH": tree, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], env=env, cwd=tree, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs=2, required=True, metavar=("A", "B"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chat-rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = {"prompts": Path(tmp) / "prompts.parquet", "chats": Path(tmp) / "chats.parquet"}
        requests_io.build(files["prompts"], args.rows, 0.0)
        build_chats(files["chats"], args.chat_rows)
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.rounds):
            for kind, path in files.items():
                for tree in args.trees:
                    runs.setdefault((kind, tree), []).append(read_once(tree, path))
    print(f"{'file':<8} {'checkout':<32} {'rows':>9} {'best s':>7} {'peak RSS MiB':>13}")
    for (kind, tree), rs in runs.items():
        best = min(r["s"] for r in rs)
        rss = min(r["rss"] for r in rs)
        print(f"{kind:<8} {tree:<32} {rs[0]['rows']:>9} {best:>7.2f} {rss:>13.0f}")


if __name__ == "__main__":
    main()
