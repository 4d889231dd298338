"""Planner scale: 10,000 requests within 60 s and 100,000 within 10 min, under 8 GB.

Each run is one ``sajax.plan`` call in a fresh process state (compilation INCLUDED in the wall
time) on ``paper_mix(n)`` (profile gpu-7b-a100, tightness ``--tightness``) with a time budget a
little under the target; jobs above ``PlanConfig.window`` requests are planned in windows
(``sajax.decompose``). Quality is reported by the fast model for the plan and for FCFS (the
reference simulator is a Python loop, minutes at 100k; at 10k it is also run). The quality cost
of windows is measured at 10k: the same budget with one full permutation (``window`` raised above
n) against the windowed plan.

    .venv/bin/python benchmarks/planner_scale.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import resource
import sys
import time
from pathlib import Path

import jax
import numpy as np

from batch_runner.workloads.synthetic import mix_problem, paper_mix
from sajax.metrics import attainment, goodput, slo_metrics
from sajax.planner import PlanConfig, plan
from sajax.profiles import load_profile
from sajax.refsim import reference_simulate

TARGET_S = {10_000: 60.0, 100_000: 600.0}


def reference_quality(order, cap, cols, model) -> tuple[float, float, float]:
    m_cap = model._replace(slots=np.asarray(cap, np.asarray(model.slots).dtype))
    ref = reference_simulate(order, cols["input_len"], cols["output_len"], m_cap)
    m = slo_metrics(
        ref.first_token_ms,
        ref.finish_ms,
        cols["output_len"],
        cols["slo_e2e_ms"],
        cols["slo_ttft_ms"],
        cols["slo_tpot_ms"],
    )
    return (
        float(attainment(m.met, m.has_slo)),
        float(goodput(m.met, m.has_slo, m.e2e_ms)),
        float(np.mean(m.e2e_ms) / 1000),
    )


def run(n, budget, config, cols, model, reference: bool) -> dict:
    problem = mix_problem(cols)
    t0 = time.perf_counter()
    result = plan(
        problem, model, dataclasses.replace(config, time_budget_s=budget), jax.random.key(0)
    )
    wall = time.perf_counter() - t0
    s = result.summary
    row = {
        "n": n,
        "wall_s": wall,
        "windows": s.windows,
        "steps": s.steps,
        "cap": s.inflight_cap,
        "attainment": s.attainment,
        "G": s.goodput,
        "mean_e2e_s": s.mean_e2e_ms / 1000,
        "fcfs_attainment": s.fcfs_attainment,
        "fcfs_mean_e2e_s": s.fcfs_mean_e2e_ms / 1000,
        "best_seed": s.best_seed,
        "stop": s.stop_reason,
        "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }
    if reference:
        att, g, e2e = reference_quality(result.order, result.inflight_cap, cols, model)
        row |= {"ref_attainment": att, "ref_G": g, "ref_mean_e2e_s": e2e}
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--tightness", type=float, default=2.2)
    ap.add_argument("--profile", default="gpu-7b-a100")
    ap.add_argument("--margin", type=float, default=0.85, help="budget = margin x target")
    ap.add_argument("--compare-full", action="store_true", help="10k: also one full permutation")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    model = load_profile(args.profile)
    rows = []
    for n in args.sizes:
        cols = paper_mix(n, seed=0, tightness=args.tightness, model=model)
        target = TARGET_S.get(n, 60.0 * n / 10_000)
        budget = args.margin * target
        rows.append(run(n, budget, PlanConfig(), cols, model, reference=n <= 10_000))
        if args.compare_full and n <= 10_000:
            full = PlanConfig(window=n + 1)
            rows.append(run(n, budget, full, cols, model, reference=True) | {"mode": "full"})
    lines = [
        "## Planner scale",
        "",
        f"Command: `{' '.join(sys.argv)}`  ",
        f"Machine: {platform.machine()}, 2 shared cores, jax {jax.__version__} "
        f"({jax.default_backend()}); date {datetime.date.today()}  ",
        f"Workload: paper_mix(n, seed 0, tightness {args.tightness}), profile {args.profile}. "
        "Wall time includes compilation. Attainment / G / mean e2e by the fast model "
        "(ref_: reference simulator).",
        "",
        "| n | mode | wall (s) | target (s) | windows | steps | cap | attainment | FCFS | "
        "mean e2e (s) | FCFS e2e (s) | ref attainment | ref mean e2e (s) | max RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r.get('mode', 'windows' if r['windows'] else 'full')} | "
            f"{r['wall_s']:.1f} | {TARGET_S.get(r['n'], float('nan')):.0f} | {r['windows']} | "
            f"{r['steps']} | {r['cap']} | {r['attainment']:.1%} | {r['fcfs_attainment']:.1%} | "
            f"{r['mean_e2e_s']:.1f} | {r['fcfs_mean_e2e_s']:.1f} | "
            f"{r.get('ref_attainment', float('nan')):.1%} | "
            f"{r.get('ref_mean_e2e_s', float('nan')):.1f} | {r['max_rss_gb']:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
