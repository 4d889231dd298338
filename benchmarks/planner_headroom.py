"""Headroom of the 10 s plans at the tight levels: a long local descent after the plan, and the
slot accounting that bounds the tightest level.

For each ``--levels`` x ``--objectives`` cell of the planner table (``paper_mix``, 1,000
requests, predicted case: the planner sees predicted lengths, the reference simulator runs the
actual ones), this script

1. plans with ``PlanConfig(time_budget_s=--budget)`` (as the planner table does);
2. runs the planner's own hit-set descent (``sajax.triage.hit_set_descent``) from that plan for
   ``--descent`` seconds: each round scores ``--batch`` neighbours of the current order exactly
   (the fast model at the plan's cap) and keeps the best if it is better. A neighbour moves one
   predicted miss to a random position up to just behind the last predicted hit and, half of
   the time, also moves one predicted hit there. These are the moves that change the set of
   hits; the annealer spends most of its proposals elsewhere (in the tail, where they change
   little);
3. reports the plan and the descent's result by the reference simulator (attainment, G, mean
   e2e vs FCFS), and the slot accounting at ``T``, the latest chat TTFT / classification e2e
   deadline: admission is strictly in order and at most ``cap`` requests are in flight, so the
   requests admitted by ``T`` number at most ``cap + (requests finished by T)``, and every
   chat or classification that meets its SLO was admitted by ``T``.

    .venv/bin/python benchmarks/planner_headroom.py --levels very_tight tight --descent 150

Slow by design (minutes per cell); it is a probe of the search, not part of the planner.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner_table import LEVEL_ORDER, cell_inputs, reference_metrics  # noqa: E402

from batch_runner.workloads.synthetic import TASKS  # noqa: E402
from sajax.objectives.slo import objective_params  # noqa: E402
from sajax.planner import (  # noqa: E402
    PlanConfig,
    PlanEnergy,
    make_data,
    objective_scale,
    plan,
    predicted_met,
    score_orders,
    sim_settings,
    with_cap,
)
from sajax.profiles import load_profile  # noqa: E402
from sajax.refsim import reference_simulate  # noqa: E402
from sajax.triage import hit_set_descent  # noqa: E402


def exact_scorer(problem, model, objective: str, cap: int):
    """(energy_fn(orders (k, N)) -> (k,), met_fn(order) -> (N,) bool), exact, at ``cap``."""
    scale = objective_scale(problem, model)
    data = make_data(problem, model, PlanConfig(objective=objective), jax.random.key(0), scale)
    max_slots, kv = sim_settings(model, [cap], problem.mask.shape[0], data.problem)
    energy = PlanEnergy(objective, False, 0, max_slots, kv)
    data = data._replace(params=objective_params(0.0, scale), model=with_cap(model, cap))

    def energy_fn(orders):
        return score_orders(energy, np.asarray(orders, np.int32), data)[0]

    def met_fn(order):
        return predicted_met(order, problem, with_cap(model, cap), energy)

    return energy_fn, met_fn


def slot_accounting(order, cap, inp, actual, cols, model) -> str:
    """Requests finished by T (the latest chat TTFT or classification e2e deadline), by task,
    and the admissions by T they allow (cap + finished)."""
    m_cap = model._replace(slots=np.asarray(cap, np.asarray(model.slots).dtype))
    ref = reference_simulate(order, inp, actual, m_cap)
    task = cols["task"]
    deadline = np.where(task == "chat", cols["slo_ttft_ms"], cols["slo_e2e_ms"])
    t = float(np.nanmax(deadline[task != "code"]))
    done = {name: int(np.sum((task == name) & (ref.finish_ms <= t))) for name in TASKS}
    by_task = " / ".join(f"{done[name]}" for name in TASKS)
    return f"T {t / 1000:.2f} s: {by_task}; admitted <= {int(cap) + sum(done.values())}"


def fmt(m: dict, fcfs: dict) -> str:
    vs = m["mean_e2e_s"] / fcfs["mean_e2e_s"] - 1
    return (
        f"{m['attainment']:.1%} ({m['attainment'] / fcfs['attainment']:.2f}x) | {m['G']:.4f} | "
        f"{m['mean_e2e_s']:.2f} ({vs:+.1%})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", nargs="+", default=["very_tight", "tight"], choices=LEVEL_ORDER)
    ap.add_argument("--objectives", nargs="+", default=["attainment", "goodput"])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=10.0, help="plan time budget (s)")
    ap.add_argument("--descent", type=float, default=150.0, help="descent seconds per cell")
    ap.add_argument("--batch", type=int, default=256, help="neighbours scored per round")
    ap.add_argument("--profile", default="gpu-7b-a100")
    args = ap.parse_args()
    model = load_profile(args.profile)
    print(
        f"Command: `benchmarks/planner_headroom.py {' '.join(sys.argv[1:])}`  \n"
        f"Machine: {platform.machine()}, jax {jax.__version__} ({jax.default_backend()}); "
        f"date {datetime.date.today()}  \nPredicted case, reference simulator on actual lengths.\n"
    )
    print(
        "| level | objective | FCFS att / e2e (s) | plan att (x FCFS) | plan G | plan e2e (s) | "
        f"+ {args.descent:g} s descent: att | G | e2e (s) | rounds (improved) | after the "
        f"descent: finished by T ({' / '.join(TASKS)}), admitted by T |"
    )
    print("|" + "---|" * 11)
    for level in args.levels:
        c = cell_inputs(level, "predicted", args.n, args.seed, model)
        fcfs = reference_metrics(
            np.arange(args.n), int(model.slots), c.inp, c.actual, c.cols, model
        )
        for objective in args.objectives:
            cfg = PlanConfig(time_budget_s=args.budget, objective=objective)
            plan(c.problem, model, cfg, jax.random.key(args.seed + 1))  # compile outside the timing
            res = plan(c.problem, model, cfg, jax.random.key(args.seed))
            cap = res.inflight_cap
            before = reference_metrics(res.order, cap, c.inp, c.actual, c.cols, model)
            energy_fn, met_fn = exact_scorer(c.problem, model, objective, cap)
            order, _, rounds, improved = hit_set_descent(
                res.order,
                met_fn,
                energy_fn,
                args.n,
                np.random.default_rng(args.seed),
                batch=args.batch,
                deadline=time.perf_counter() + args.descent,
            )
            after = reference_metrics(order, cap, c.inp, c.actual, c.cols, model)
            slots = slot_accounting(order, cap, c.inp, c.actual, c.cols, model)
            print(
                f"| {level} | {objective} | {fcfs['attainment']:.1%} / {fcfs['mean_e2e_s']:.2f} | "
                f"{fmt(before, fcfs)} | {fmt(after, fcfs)} | {rounds} ({improved}) | {slots} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
