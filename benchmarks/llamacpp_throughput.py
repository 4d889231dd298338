"""Throughput of the llamacpp engine: one sequence alone vs N slots decoding together.

Each configuration runs the same set of requests (short chat prompts, greedy, ``ignore_eos`` so
every request generates exactly ``--tokens`` tokens) through ``LlamaCppEngine`` and reports:

    aggregate tokens/s  = sum(output tokens) / wall time from first submit to last finish
    decode tokens/s     = decode tokens / time spent in decode-only iterations (no prefill)

The configurations alternate (1 slot, N slots, 1 slot, ...) for ``--repeats`` rounds so that
a shared, noisy machine affects both alike; the median is reported.

    .venv/bin/python benchmarks/llamacpp_throughput.py --slots 4 --requests 8 --tokens 32
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics

from batch_runner.engines.base import EngineRequest, Failed, Finished
from batch_runner.engines.llamacpp import LlamaCppEngine

PROMPTS = [
    "Name a fruit.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Count from one to five.",
    "Give me a colour.",
    "What do cats eat?",
    "Say hello in Spanish.",
    "Name a planet.",
]


def run_once(engine: LlamaCppEngine, n_requests: int, tokens: int) -> dict:
    engine.iteration_log.clear()
    t0 = engine.now()
    for i in range(n_requests):
        prompt = PROMPTS[i % len(PROMPTS)]
        engine.submit(
            EngineRequest(id=f"r{i}", prompt=prompt, max_new_tokens=tokens, ignore_eos=True)
        )
    finished, last, out = 0, t0, 0
    while finished < n_requests:
        for event in engine.poll(timeout=5.0):
            if isinstance(event, Failed):
                raise RuntimeError(event.error)
            if isinstance(event, Finished):
                finished += 1
                out += event.output_tokens
                last = max(last, event.t)
    decode_only = [r for r in engine.iteration_log if r.prefill_tokens == 0]
    decode_s = sum(r.seconds for r in decode_only)
    return {
        "wall_s": last - t0,
        "aggregate_tps": out / (last - t0),
        "decode_tps": sum(r.decode_tokens for r in decode_only) / decode_s if decode_s else 0.0,
        "iterations": len(engine.iteration_log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: os.cpu_count()")
    args = parser.parse_args()

    engines = {
        1: LlamaCppEngine(slots=1, n_ctx=1024, n_threads=args.threads),
        args.slots: LlamaCppEngine(
            slots=args.slots, n_ctx=1024 * args.slots, n_threads=args.threads
        ),
    }
    for engine in engines.values():
        engine.start()
        run_once(engine, 1, 4)  # warm-up: page in the weights, build the compute graphs
    results: dict[int, list[dict]] = {k: [] for k in engines}
    try:
        for _ in range(args.repeats):
            for slots, engine in engines.items():
                results[slots].append(run_once(engine, args.requests, args.tokens))
    finally:
        for engine in engines.values():
            engine.stop()

    threads = args.threads or os.cpu_count()
    when = datetime.datetime.now().isoformat(timespec="minutes")
    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0]
    print(f"# {when}  {cpu}  cpus={os.cpu_count()} threads={threads} load={load:.2f}")
    n, t, k = args.requests, args.tokens, args.repeats
    print(f"# {n} requests x {t} tokens (ignore_eos, greedy), median of {k}")
    print("| slots | wall s | aggregate tok/s | decode-only tok/s | iterations |")
    print("|---|---|---|---|---|")
    for slots, runs in results.items():
        m = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        row = [m["wall_s"], m["aggregate_tps"], m["decode_tps"], m["iterations"]]
        print(f"| {slots} | {row[0]:.2f} | {row[1]:.1f} | {row[2]:.1f} | {row[3]:.0f} |")
    ratios = [
        b["wall_s"] / a["wall_s"] for a, b in zip(results[1], results[args.slots], strict=True)
    ]
    print(
        f"wall-time ratio {args.slots} slots / 1 slot (per round): "
        + ", ".join(f"{r:.2f}" for r in ratios)
    )


if __name__ == "__main__":
    main()
