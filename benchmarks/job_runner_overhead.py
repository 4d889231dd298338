"""How much the job runner adds on top of the simulator: executor, checkpoints, Parquet I/O.

Three timings of the same N requests on the ``sim`` engine (virtual clock, FCFS, cap = slots):

  A  raw:      sajax.refsim.ContinuousBatchSim alone (advance()), fed in order as slots free
  B  executor: SimEngine + batch_runner.executor.execute (events, retries bookkeeping)
  C  job:      batch_runner.job.run_job end to end (read + validate, checkpoint parts every
               50 rows, assemble with sajax.metrics, write Parquet + summary)

Reported as wall seconds, rows/s and the ratios B/A and C/A (measured in one process, one after
the other, so that machine noise hits all three alike). Also checks that B's per-request times
equal A's (the executor must not change what the engine does).

    .venv/bin/python benchmarks/job_runner_overhead.py --rows 5000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make_requests(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "prompt": ["w" * int(k) for k in rng.integers(40, 4000, n)],
            "max_new_tokens": rng.integers(8, 256, n),
            "task": rng.choice(["chat", "code", "cls"], n),
            "slo_e2e_ms": rng.uniform(5e3, 5e5, n),
        }
    )


def raw_sim(model, lengths) -> tuple[float, dict]:
    from sajax.refsim import ContinuousBatchSim

    slots = int(model.slots)
    t = time.perf_counter()
    sim = ContinuousBatchSim(model)
    queue = list(lengths.items())
    nxt = 0
    inflight = 0
    finish = {}
    while nxt < len(queue) or inflight:
        while nxt < len(queue) and inflight < slots:
            rid, (n_in, n_out) = queue[nxt]
            sim.submit(rid, n_in, n_out)
            nxt += 1
            inflight += 1
        it = sim.advance()  # as the sim engine does: to the next event, in closed form
        for rid in it.finished:
            finish[rid] = it.t_end_ms
            inflight -= 1
    return time.perf_counter() - t, finish


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    from batch_runner.engines.base import EngineRequest
    from batch_runner.engines.sim import (
        SimEngine,
        estimate_input_tokens,
        simulated_output_tokens,
    )
    from batch_runner.executor import execute
    from batch_runner.job import JobConfig, run_job
    from sajax.profiles import load_profile

    model = load_profile(args.profile)
    table = make_requests(args.rows, args.seed)
    reqs = [
        EngineRequest(id=r["id"], prompt=r["prompt"], max_new_tokens=int(r["max_new_tokens"]))
        for r in table.select(["id", "prompt", "max_new_tokens"]).to_pylist()
    ]
    lengths = {r.id: (estimate_input_tokens(r), simulated_output_tokens(r)) for r in reqs}
    slots = int(model.slots)

    times = {"raw": [], "executor": [], "job": []}
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "requests.parquet"
        pq.write_table(table, src)
        for k in range(args.repeat):
            dt, finish_raw = raw_sim(model, lengths)
            times["raw"].append(dt)

            engine = SimEngine(model)
            engine.start()
            t = time.perf_counter()
            result = execute(engine, reqs, slots)
            times["executor"].append(time.perf_counter() - t)
            engine.stop()
            got = {m.id: m.finish_ms for m in result.measurements}
            worst = max(abs(got[i] - finish_raw[i]) for i in finish_raw)
            assert worst < 1e-3, f"executor changed the simulated times (by {worst} ms)"

            out = Path(d) / f"out{k}.parquet"
            t = time.perf_counter()
            run_job(
                JobConfig(
                    input=src,
                    out=out,
                    engine="sim",
                    policy="fcfs",
                    quiet=True,
                    profile=args.profile,
                )
            )
            times["job"].append(time.perf_counter() - t)

    best = {k: min(v) for k, v in times.items()}
    report = {
        "command": f"benchmarks/job_runner_overhead.py --rows {args.rows} --repeat {args.repeat}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} "
        f"python {platform.python_version()}",
        "rows": args.rows,
        "slots": slots,
        "best_s": best,
        "rows_per_s": {k: args.rows / v for k, v in best.items()},
        "executor_over_raw": best["executor"] / best["raw"],
        "job_over_raw": best["job"] / best["raw"],
        "all_s": times,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
