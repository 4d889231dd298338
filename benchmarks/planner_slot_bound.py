"""A slot-aware upper bound on SLO attainment (any order, any cap <= slots), solved as a MILP.

``sajax.triage.attainment_upper_bound`` relaxes the engine to one machine and lets a request
hold ``1 / slots`` of an iteration's fixed cost: it ignores that a request HOLDS a slot from
admission to finish. This bound adds the slots. For a request ``i`` that meets its SLO (deadline
``D_i``: its e2e SLO, or with only a TTFT SLO its TTFT SLO; TPOT relaxed, TPOT-only rows count
as met), in any schedule:

- engine time (the one-machine relaxation, with the context term that one drops): an
  iteration costs ``a + b * forward + c * context``; split among its sequences, request ``i``'s
  share is ``w_i = b * tokens_i + c * ctx_i + a * iterations_i / slots`` (``ctx_i``: its own
  attended context summed over its iterations) before ``D_i``, so ``sum_{met, D_i <= t} w_i <=
  t`` for every ``t``;
- slot time: it holds a slot for at least ``p_i = a * iterations_i + b * tokens_i + c *
  ctx_i`` (each of its iterations costs at least ``a`` plus its own tokens and context; e2e:
  ``out`` iterations, ``in + out - 1`` tokens; TTFT only: one iteration, ``in`` tokens, until
  its first token), inside ``[0, D_i]``; with ``S`` slots, ``sum_{met, D_i <= t} p_i <= S t``;
- slots are not shared (a sequence runs on one slot from admission to finish): one slot can
  finish at most ``k`` requests by ``t`` that each hold it longer than ``t / (k + 1)``, so
  ``#{met: D_i <= t, p_i > t / (k + 1)} <= k * S`` for ``k = 1..K``.

``max sum_i x_i`` over binary ``x`` subject to these (``t`` over ``--thresholds`` quantiles of
the deadlines: fewer constraints, still a relaxation) is solved by HiGHS
(``scipy.optimize.milp``); with a time limit its dual bound (and the LP relaxation's, floored)
is used, still an upper bound. Every constraint holds for every schedule of the engine model,
so the optimum bounds the attainment of every order and cap <= slots.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/planner_slot_bound.py --levels very_tight
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_matrix

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner_table import LEVEL_ORDER, cell_inputs, reference_metrics  # noqa: E402

from batch_runner.workloads.synthetic import TIGHTNESS_LEVELS, mix_problem  # noqa: E402
from sajax.profiles import load_profile  # noqa: E402
from sajax.triage import attainment_upper_bound  # noqa: E402


def slot_bound(
    problem, model, k_max: int = 4, time_limit: float = 60.0, thresholds: int = 120
) -> dict:
    """The MILP bound (module doc) as a share of the requests with an SLO, with its status."""
    a, b, c = (float(np.asarray(x)) for x in (model.a_ms, model.b_ms, model.c_ms))
    slots = int(np.asarray(model.slots))
    live = np.asarray(problem.mask, bool)
    inp = np.asarray(problem.input_len, np.float64)[live]
    out = np.asarray(problem.output_len, np.float64)[live]
    e2e = np.asarray(problem.slo_e2e_ms, np.float64)[live]
    ttft = np.asarray(problem.slo_ttft_ms, np.float64)[live]
    tpot = np.asarray(problem.slo_tpot_ms, np.float64)[live]
    has_e2e, has_ttft = np.isfinite(e2e), np.isfinite(ttft)
    has_slo = has_e2e | has_ttft | np.isfinite(tpot)
    timed = has_e2e | has_ttft
    iters = np.where(has_e2e, out, 1.0)
    tokens = np.where(has_e2e, inp + out - 1, inp)
    # its own attended context summed over its iterations: the prompt (in tokens, at least)
    # in the first-token iteration, then in + m + 1 in decode step m = 1..out-1
    context = np.where(has_e2e, out * inp + out * (out + 1) / 2 - 1, inp)
    deadline = np.where(has_e2e, e2e, ttft)[timed]
    work = (b * tokens + c * context + a * iters / slots)[timed]
    hold = (a * iters + b * tokens + c * context)[timed]
    n = int(timed.sum())
    ts = np.unique(deadline)
    if len(ts) > thresholds:  # a subset of the constraints: still a relaxation
        ts = np.unique(np.quantile(ts, np.linspace(0, 1, thresholds), method="higher"))
    due = deadline[None, :] <= ts[:, None]  # (T, n)
    rows = [due * work[None, :], due * hold[None, :]]
    ub = [ts, slots * ts]
    for k in range(1, k_max + 1):
        rows.append(due & (hold[None, :] > ts[:, None] / (k + 1)))
        ub.append(np.full(len(ts), k * slots, np.float64))
    a_mat = csr_matrix(np.concatenate(rows).astype(np.float64))
    t0 = time.perf_counter()
    lp = milp(
        -np.ones(n),
        constraints=LinearConstraint(a_mat, -np.inf, np.concatenate(ub)),
        bounds=Bounds(0, 1),
    )
    lp_bound = float(np.floor(-lp.fun + 1e-6)) if lp.status == 0 else float("inf")
    res = milp(
        -np.ones(n),
        constraints=LinearConstraint(a_mat, -np.inf, np.concatenate(ub)),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        options={"time_limit": time_limit, "disp": False},
    )
    solve_s = time.perf_counter() - t0
    dual = getattr(res, "mip_dual_bound", None)
    best = -float(res.fun) if res.x is not None else float("nan")
    upper = float(np.floor(-dual + 1e-6)) if dual is not None and np.isfinite(dual) else lp_bound
    upper = min(upper, lp_bound)
    extra = int(np.sum(has_slo & ~timed))
    n_slo = int(has_slo.sum())
    return {
        "bound": (upper + extra) / n_slo,
        "incumbent": (best + extra) / n_slo,
        "optimal": bool(res.status == 0),
        "solve_s": solve_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="gpu-7b-a100")
    ap.add_argument("--levels", nargs="+", default=list(LEVEL_ORDER))
    ap.add_argument("--k-max", type=int, default=4)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--thresholds", type=int, default=120)
    args = ap.parse_args()
    model = load_profile(args.profile)
    print(
        "| level | case | FCFS (reference) | one-machine bound | slot bound (MILP) | status "
        "| 5x FCFS |"
    )
    print("|---|---|---|---|---|---|---|")
    for level in args.levels:
        c = cell_inputs(level, "predicted", args.n, args.seed, model)
        for case, out in (("oracle", c.predicted), ("predicted (actual)", c.actual)):
            p = mix_problem(c.cols, output_len=out, size=args.n)
            fcfs = reference_metrics(np.arange(args.n), int(model.slots), c.inp, out, c.cols, model)
            one = attainment_upper_bound(p, model)
            sb = slot_bound(p, model, args.k_max, args.time_limit, args.thresholds)
            status = "optimal" if sb["optimal"] else f"dual bound (incumbent {sb['incumbent']:.1%})"
            print(
                f"| {level} ({TIGHTNESS_LEVELS[level]:g}) | {case} | {fcfs['attainment']:.1%} | "
                f"{one:.1%} | {sb['bound']:.1%} | {status}, {sb['solve_s']:.1f} s | "
                f"{5 * fcfs['attainment']:.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
