"""Batched vs classic search at equal work: the same number of orders scored, no time budget.

A shared machine's load decides how many steps a time-budgeted plan gets, so this compares the
two searches by what they do with the same work: ``--orders`` exactly scored orders each (classic:
16 chains x steps, one proposal a step; batched: ``--chains`` in all x steps x 2 proposals), the
same seeds, the descent off and the polish on, judged by the reference simulator on the table's
predicted case (``planner_table.cell_inputs``: actual lengths drawn around the predicted ones).
The ``seeds only`` row is the same plan with ``steps=0``.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/planner_search_quality.py --levels very_tight
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner_table import LEVEL_ORDER, cell_inputs, reference_metrics  # noqa: E402

from sajax.planner import PlanConfig, plan  # noqa: E402
from sajax.profiles import load_profile  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", nargs="+", default=list(LEVEL_ORDER))
    ap.add_argument("--orders", type=int, default=8192)
    ap.add_argument("--chains", type=int, default=64, help="batched: chains in all")
    ap.add_argument("--objective", default="goodput")
    args = ap.parse_args()
    model = load_profile("gpu-7b-a100")
    classic_chains = 8  # per cap, two caps
    runs = {
        "seeds only": PlanConfig(steps=0),
        "classic": PlanConfig(
            search="classic", chains=classic_chains, steps=args.orders // (2 * classic_chains)
        ),
        "batched": PlanConfig(
            search="batched", chains=args.chains // 2, steps=args.orders // (args.chains * 2)
        ),
    }
    print(f"load average {os.getloadavg()[0]:.1f}; {args.orders} orders per search", flush=True)
    print(
        "| level | search | orders scored | attainment | x FCFS | G | mean e2e vs FCFS | plan s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for level in args.levels:
        c = cell_inputs(level, "predicted", args.n, args.seed, model)
        fcfs = reference_metrics(
            list(range(args.n)), int(model.slots), c.inp, c.actual, c.cols, model
        )
        for name, cfg in runs.items():
            cfg = PlanConfig(**{**cfg.__dict__, "objective": args.objective, "descent_share": 0.0})
            t0 = time.perf_counter()
            r = plan(c.problem, model, cfg, jax.random.key(args.seed))
            dt = time.perf_counter() - t0
            m = reference_metrics(r.order, r.inflight_cap, c.inp, c.actual, c.cols, model)
            print(
                f"| {level} | {name} | {r.summary.orders_scored:,} | {m['attainment']:.1%} | "
                f"{m['attainment'] / fcfs['attainment']:.2f} | {m['G']:.4f} | "
                f"{m['mean_e2e_s'] / fcfs['mean_e2e_s'] - 1:+.1%} | {dt:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
