"""The disturbance benchmark on the simulator: the engine becomes ``--factor`` x slower halfway.

One request file (``make run``'s: paper-mix, 200 rows, CPU presets, SLO bounds times
``--slo-mult``), one plan (sajax, ``--budget`` s, the shipped CPU profile = the sim's true
speed before the change), executed on the ``sim`` engine whose speed changes at half the plan's
predicted makespan (``SAJAX_SIM_DRIFT``'s ``speed``), optionally with output lengths off the
hints (``--out-scale``, ``--out-sigma``, with ``--eos``: rows generate their hinted length
instead of ``max_new_tokens``). Four runs of the same plan:

    open      the plan as made, never revised (today's job)
    closed    the closed loop (batch_runner.closed_loop): online speed fit, drift detection,
              re-plans of the pending requests with the refitted model and lengths
    oracle    a plan made knowing the true speed: the same plan, re-planned once at the moment
              of the change with the exact new speed and the true output lengths
    slow      planned from the start with the slow model (the pessimist's plan), never revised

Target: closed >= 90 % of the best of (oracle, slow). Measured attainment of every run uses the
one SLO definition (``sajax.metrics``).

    .venv/bin/python benchmarks/closed_loop_sim.py --slo-mult 1.0 2.0 --out out/closed-loop-sim.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batch_runner.closed_loop import ClosedLoop, LoopConfig  # noqa: E402
from batch_runner.engines.base import SamplingParams  # noqa: E402
from batch_runner.engines.sim import SimEngine  # noqa: E402
from batch_runner.engines.sim_drift import make_drift  # noqa: E402
from batch_runner.executor import execute  # noqa: E402
from batch_runner.job import engines as job_engines  # noqa: E402
from batch_runner.job import plan_step  # noqa: E402
from batch_runner.online_fit import OnlineLengths, scaled_model  # noqa: E402
from sajax.metrics import attainment, slo_metrics  # noqa: E402
from sajax.profiles import load_profile  # noqa: E402

REQUESTS = ROOT / "out" / "requests.parquet"


def load_table(path: Path, slo_mult: float, eos: bool = False):
    import pyarrow as pa
    import pyarrow.compute as pc

    from batch_runner.presets import load_presets
    from batch_runner.requests import read_requests

    if not path.exists():
        build_requests(path)
    presets = load_presets(ROOT / "datasets" / "slo_presets.toml", scale="cpu")
    table = read_requests(path, slo_config=presets).table
    if eos and "ignore_eos" in table.column_names:  # lengths from the hints, which may drift
        i = table.column_names.index("ignore_eos")
        table = table.set_column(i, "ignore_eos", pa.array([False] * table.num_rows))
    for col in ("slo_e2e_ms", "slo_ttft_ms"):
        if col in table.column_names:
            i = table.column_names.index(col)
            scaled = pc.multiply(pc.cast(table.column(col), pa.float64()), slo_mult)
            table = table.set_column(i, col, scaled)
    return table


def build_requests(path: Path) -> None:
    from click.testing import CliRunner

    from batch_runner.workloads.cli import workloads

    samples = ROOT / "datasets" / "samples"
    args = ["paper-mix", "--n", "200", "--scale", "cpu", "--seed", "0"]
    args += ["--chat-json", str(samples / "sharegpt_synthetic_chat.json")]
    args += ["--code-json", str(samples / "code_synthetic.json"), "--out", str(path)]
    path.parent.mkdir(parents=True, exist_ok=True)
    result = CliRunner().invoke(workloads, args)
    if result.exit_code:
        raise SystemExit(f"could not build {path}: {result.output}")


class OracleLoop(ClosedLoop):
    """Re-plans once, at the first event after ``t_switch_ms``, with the true speed and the
    true output lengths (a plan made knowing what the engine will do)."""

    def __init__(self, *a, t_switch_ms: float, true_scale: float, true_out, **kw):
        super().__init__(*a, **kw)
        self.t_switch_ms, self.true_scale, self.true_out = t_switch_ms, true_scale, true_out
        self.speed.scale = lambda: self.true_scale
        self.lengths.predict = lambda rows: np.asarray(self.true_out)[np.asarray(rows)]

    def on_complete(self, m) -> None:
        due = self._due
        super().on_complete(m)
        self._due = due  # no drift-triggered re-plans

    def revise(self, pending_ids, now_ms):
        if not self.records and self._due is None and now_ms >= self.t_switch_ms:
            self._due = "oracle: the speed changed"
        return super().revise(pending_ids, now_ms)


def measured_attainment(table, problem, measurements) -> float:
    row = {str(r): i for i, r in enumerate(table.column("id").to_pylist())}
    n = len(row)
    first, finish, out = np.full(n, np.inf), np.full(n, np.inf), np.ones(n)
    for m in measurements:
        i = row[m.id]
        if m.error is None:
            first[i], finish[i], out[i] = m.first_token_ms, m.finish_ms, m.output_tokens
    met = slo_metrics(
        first, finish, out, problem.slo_e2e_ms, problem.slo_ttft_ms, problem.slo_tpot_ms
    )
    return float(attainment(met.met, met.has_slo, problem.weight))


def one_level(args, slo_mult: float) -> dict:
    import jax

    from sajax.planner import PlanConfig, plan

    table = load_table(args.requests, slo_mult, eos=args.eos)
    model = load_profile("default")
    lengths = plan_step._predicted_output_tokens(table)
    problem = plan_step._problem_from_table(table, SimEngine(model), lengths.tokens)
    cfg = PlanConfig(objective=args.objective, time_budget_s=args.budget)
    t = time.perf_counter()
    base = plan(problem, model, cfg, jax.random.key(args.seed))
    plan_s = time.perf_counter() - t
    makespan_s = float(np.nanmax(base.finish_ms)) / 1000.0
    t_switch = args.at * makespan_s
    drift = make_drift(
        speed=[[t_switch, args.factor]],
        output_scale=args.out_scale,
        output_sigma=args.out_sigma,
        seed=args.seed,
    )
    requests = job_engines._engine_requests(table, SamplingParams())
    ids = [r.id for r in requests]
    max_new = plan_step._int_column(table, "max_new_tokens", 256)
    hints = plan_step._int_column(table, "output_tokens_hint", -1)
    tasks = table.column("task").to_pylist()
    ignore = np.asarray(table.column("ignore_eos").to_pylist(), bool)
    # what the sim will generate (batch_runner.engines.sim.simulated_output_tokens)
    hinted = np.where(hints >= 0, hints, max_new)
    true_out = np.array(
        [
            max_new[i] if ignore[i] else drift.output_tokens(r.id, int(hinted[i]), int(max_new[i]))
            for i, r in enumerate(requests)
        ]
    )

    def new_lengths():
        return OnlineLengths(tasks, hints, max_new, ignore, lengths.tokens)

    def run(plan_result, controller_factory=None) -> dict:
        engine = SimEngine(model, drift=drift, log_iterations=args.log_iterations)
        engine.start()
        ordered = [requests[i] for i in plan_result.order]
        ctl = controller_factory(engine, plan_result) if controller_factory else None
        t0 = time.perf_counter()
        result = execute(engine, ordered, plan_result.inflight_cap, controller=ctl)
        wall = time.perf_counter() - t0
        out = {
            "attainment": measured_attainment(table, problem, result.measurements),
            "makespan_s": max(m.finish_ms for m in result.measurements) / 1000.0,
            "wall_s": wall,
        }
        if ctl is not None:
            out["replans"] = ctl.summary()["replans"]
        return out

    loop_cfg = LoopConfig(budget_s=args.replan_budget, background=False)

    def closed(engine, p):
        return ClosedLoop(
            problem, ids, p.inflight_cap, p.finish_ms, model, engine,
            lengths=new_lengths(), config=loop_cfg, objective=args.objective, seed=args.seed,
        )  # fmt: skip

    def oracle(engine, p):
        return OracleLoop(
            problem, ids, p.inflight_cap, p.finish_ms, model, engine,
            lengths=new_lengths(), config=loop_cfg, objective=args.objective, seed=args.seed,
            t_switch_ms=1000 * t_switch, true_scale=args.factor, true_out=true_out,
        )  # fmt: skip

    slow_plan = plan(problem, scaled_model(model, args.factor), cfg, jax.random.key(args.seed))
    runs = {
        "open": run(base),
        "closed": run(base, closed),
        "oracle": run(base, oracle),
        "slow": run(slow_plan),
    }
    best = max(runs["oracle"]["attainment"], runs["slow"]["attainment"])
    return {
        "slo_mult": slo_mult,
        "predicted_attainment": float(base.summary.attainment),
        "plan_s": plan_s,
        "makespan_predicted_s": makespan_s,
        "switch_s": t_switch,
        "runs": runs,
        "closed_vs_best": runs["closed"]["attainment"] / best if best > 0 else float("nan"),
        "open_vs_best": runs["open"]["attainment"] / best if best > 0 else float("nan"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=Path, default=REQUESTS)
    ap.add_argument("--slo-mult", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    ap.add_argument("--factor", type=float, default=2.0, help="slowdown after the change")
    ap.add_argument("--at", type=float, default=0.5, help="change at this share of makespan")
    ap.add_argument("--out-scale", type=float, default=1.0)
    ap.add_argument("--out-sigma", type=float, default=0.0)
    ap.add_argument("--eos", action="store_true", help="rows stop at their hints (no ignore_eos)")
    ap.add_argument("--objective", default="goodput")
    ap.add_argument("--budget", type=float, default=5.0, help="initial plan budget (s)")
    ap.add_argument("--replan-budget", type=float, default=1.0)
    ap.add_argument("--log-iterations", action="store_true", help="per-iteration speed fit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for mult in args.slo_mult:
        r = one_level(args, mult)
        rows.append(r)
        runs = r["runs"]
        print(
            f"slo x{mult:g}: predicted {100 * r['predicted_attainment']:.1f}%  "
            + "  ".join(f"{k} {100 * v['attainment']:.1f}%" for k, v in runs.items())
            + f"  closed/best {r['closed_vs_best']:.3f}  open/best {r['open_vs_best']:.3f}  "
            f"re-plans {len(runs['closed']['replans'])}",
            flush=True,
        )
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "levels": rows}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
