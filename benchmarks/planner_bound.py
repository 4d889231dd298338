"""Upper bound on SLO attainment of any order and cap (``sajax.triage.attainment_upper_bound``).

A one-machine relaxation of the batch engine solved exactly by Moore-Hodgson: every iteration
costs at least ``a + b * forward_tokens`` and serves at most ``slots`` sequences, so a request
that meets its SLO needs ``b * tokens + a * iterations / slots`` of engine time before its
deadline (TPOT SLOs relaxed). Reported for the planner table's workload (``paper_mix``, 1,000
requests) at each tightness level, for the oracle lengths and for the predicted case's actual
lengths (the reference simulator's), next to FCFS's attainment (reference simulator).

    .venv/bin/python benchmarks/planner_bound.py --n 1000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner_table import cell_inputs, reference_metrics  # noqa: E402

from batch_runner.workloads.synthetic import TIGHTNESS_LEVELS, mix_problem  # noqa: E402
from sajax.profiles import load_profile  # noqa: E402
from sajax.triage import attainment_upper_bound  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="gpu-7b-a100")
    args = ap.parse_args()
    model = load_profile(args.profile)
    print("| level | tightness | case | FCFS (reference) | upper bound | 5x FCFS |")
    print("|---|---|---|---|---|---|")
    for level, tight in TIGHTNESS_LEVELS.items():
        c = cell_inputs(level, "predicted", args.n, args.seed, model)
        for case, out in (("oracle", c.predicted), ("predicted (actual lengths)", c.actual)):
            p = mix_problem(c.cols, output_len=out, size=args.n)
            fcfs = reference_metrics(np.arange(args.n), int(model.slots), c.inp, out, c.cols, model)
            bound = attainment_upper_bound(p, model)
            print(
                f"| {level} | {tight:g} | {case} | {fcfs['attainment']:.1%} | {bound:.1%} "
                f"| {5 * fcfs['attainment']:.1%} |"
            )


if __name__ == "__main__":
    main()
