"""Peak memory and time of reading a large ShareGPT file: the streaming reader vs ``json.load``.

Generates a ShareGPT-format file of about ``--mb`` MB (multi-turn conversations whose first
exchange has ShareGPT-like lengths), cuts a copy of it in the middle of its last record, and runs
each reader in a fresh process (its peak RSS is its own):

- ``stream``: ``read_sharegpt`` (ijson) on the cut file, ``--n`` pairs kept, whitespace tokens;
- ``stream-all``: the same with every conversation kept (n = all);
- ``imports``: the same process that only imports the reader (the floor of the RSS);
- ``json.load``: the whole complete file loaded (what the reader did before; it cannot read the
  cut file at all).

    .venv/bin/python benchmarks/sharegpt_stream.py --mb 600 --out benchmarks/results/sharegpt.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from batch_runner.workloads.sharegpt import read_sharegpt
from batch_runner.workloads.tokens import TokenCounter
mode, path, n = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if mode == "imports":
    records, truncated, kept = 0, False, None
elif mode == "json.load":
    with open(path, "rb") as f:
        records, truncated, kept = len(json.load(f)), False, None
else:
    words = TokenCounter("words", lambda text: len(text.split()))
    got = read_sharegpt(path, words, n=None if n == "all" else int(n))
    records, truncated, kept = got.records, got.truncated, len(got.pairs)
seconds = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(records=records, truncated=truncated, kept=kept, seconds=seconds, rss=rss)))
"""


def write_file(path: Path, megabytes: float, seed: int) -> int:
    """A ShareGPT JSON list of about ``megabytes`` MB; returns the number of conversations."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{k}" for k in range(500)]
    pool = []  # 2,000 distinct conversations, written in turn under fresh ids
    for _ in range(2000):
        turns = []
        for t in range(int(rng.integers(2, 9))):
            length = int(rng.lognormal(5.0 if t % 2 else 3.8, 1.0))
            text = " ".join(rng.choice(vocab, size=max(1, length)))
            turns.append({"from": "gpt" if t % 2 else "human", "value": text})
        pool.append(json.dumps(turns, indent=2))
    target, count = megabytes * 1e6, 0
    with path.open("w") as f:
        f.write("[\n")
        while f.tell() < target:
            body = pool[count % len(pool)]
            f.write(
                f'{"" if count == 0 else ","}\n{{"id": "gen_{count}", "conversations": {body}}}'
            )
            count += 1
        f.write("\n]\n")
    return count


def cut_copy(path: Path, out: Path) -> None:
    """``path`` cut in the middle of its last record (a few hundred bytes before its end)."""
    size = path.stat().st_size
    with path.open("rb") as src, out.open("wb") as dst:
        remaining = size - 300
        while remaining > 0:
            chunk = src.read(min(remaining, 1 << 24))
            dst.write(chunk)
            remaining -= len(chunk)


def run(mode: str, path: Path, n: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), n],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=600.0, help="size of the generated file")
    parser.add_argument("--n", type=int, default=1000, help="pairs kept by the first reading")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-json-load", action="store_true", help="skip the baseline")
    parser.add_argument("--out", type=Path, default=None, help="append the table here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        full, cut = Path(tmp) / "full.json", Path(tmp) / "cut.json"
        t = time.perf_counter()
        count = write_file(full, args.mb, args.seed)
        cut_copy(full, cut)
        made = time.perf_counter() - t
        size = full.stat().st_size / 1e6
        rows = [("imports", cut, "0"), ("stream", cut, str(args.n)), ("stream-all", cut, "all")]
        if not args.skip_json_load:
            rows.append(("json.load", full, "all"))
        results = [(mode, run(mode, path, n)) for mode, path, n in rows]
    lines = [
        f"File: {size:.0f} MB, {count:,} conversations (generated in {made:.0f} s), the cut copy "
        f"300 bytes shorter. Load before: {os.getloadavg()[0]:.1f}.",
        "",
        "| reader | file | conversations read | ends early | pairs kept | seconds | peak RSS MB |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for mode, r in results:
        kept = "-" if r["kept"] is None else f"{r['kept']:,}"
        lines.append(
            f"| {mode} | {'complete' if mode == 'json.load' else 'cut'} | {r['records']:,} | "
            f"{'yes' if r['truncated'] else 'no'} | {kept} | {r['seconds']:.1f} | "
            f"{r['rss']:.0f} |"
        )
    lines.append(f"\nThis process (generation): peak RSS {_self_rss():.0f} MB.")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(text + "\n")


def _self_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
