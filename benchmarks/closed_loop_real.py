"""The closed loop on the real CPU engine (llama.cpp, SmolLM2-135M): calibration, accuracy,
sajax vs FCFS, and a competing CPU load halfway. Needs a quiet machine for its numbers.

One request file, ``make run``'s (paper-mix, ``--n`` rows, CPU presets), and an empty
calibration cache (``SAJAX_CACHE_DIR=OUT_DIR/cache``: a fresh clone, no calibrate step). Runs,
each one ``sajax-batch`` command on the llamacpp engine, in this order::

    sajax      the default job: --calibrate auto probes the engine (cache empty), plans, runs
    fcfs       --policy fcfs (reuses the cached fit: the cached-fit overhead)
    loaded     sajax with the closed loop; a competing CPU load (--load-procs busy processes)
               starts at half of the sajax run's makespan and stops when the job ends
    loaded-open  the same with --replan off (the plan as made)

Figures (OUT_DIR/closed-loop-real.json, and a table on stdout): predicted vs measured
attainment and mean |predicted - measured| / measured e2e of the sajax run; sajax / FCFS
measured attainment and mean e2e; probe seconds and their share of the sajax job's wall time;
the cached fit's calibration seconds; loaded vs loaded-open attainment and re-plans. Every
figure comes with ``uptime``'s load before and after each run.

    .venv/bin/python benchmarks/closed_loop_real.py --n 200 --out-dir out/closed-loop-real
    .venv/bin/python benchmarks/closed_loop_real.py --n 20 --skip-load   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SAMPLES = ROOT / "datasets" / "samples"
PRESETS = ROOT / "datasets" / "slo_presets.toml"


def _uptime() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build(args) -> Path:
    path = args.out_dir / "requests.parquet"
    cmd = [str(BIN / "sajax"), "workloads", "paper-mix", "--n", str(args.n), "--scale", "cpu"]
    cmd += ["--seed", "0", "--chat-json", str(SAMPLES / "sharegpt_synthetic_chat.json")]
    cmd += ["--code-json", str(SAMPLES / "code_synthetic.json"), "--out", str(path)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=_env(args))
    return path


def _env(args) -> dict:
    env = dict(os.environ, SAJAX_CACHE_DIR=str(args.out_dir / "cache"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_job(args, requests: Path, name: str, *extra: str, load_at_s: float | None = None):
    out = args.out_dir / name
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "summary.json"
    cmd = [str(BIN / "sajax-batch"), str(requests), "--out", str(out / "results.parquet")]
    cmd += ["--engine", "llamacpp", "--slo-config", str(PRESETS), "--summary-json", str(summary)]
    calibrate = args.calibrate if name == "sajax" else "auto"  # later runs: the cached fit
    cmd += ["--report", str(out / "report.html"), "--quiet", "--calibrate", calibrate, *extra]
    before = _uptime()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=_env(args), stderr=subprocess.PIPE, text=True)
    load: list[subprocess.Popen] = []
    try:
        while proc.poll() is None:
            if load_at_s is not None and not load and time.monotonic() - t0 >= load_at_s:
                spin = "import time\nwhile True: pass"
                load = [
                    subprocess.Popen([sys.executable, "-c", spin]) for _ in range(args.load_procs)
                ]
            time.sleep(0.2)
    finally:
        for p in load:
            p.kill()
            p.wait()
        if proc.poll() is None:  # stopped early: the job goes too (it checkpoints and exits)
            proc.terminate()
            proc.wait()
    err = proc.stderr.read()
    if proc.returncode:
        raise SystemExit(f"{name}: sajax-batch exited {proc.returncode}:\n{err}")
    s = json.loads(summary.read_text())
    s["_bench"] = {
        "wall_s": time.monotonic() - t0,
        "load_before": before,
        "load_after": _uptime(),
        "load_started": bool(load),
    }
    return s


def row(name: str, s: dict) -> dict:
    plan = s.get("plan") or {}
    cal = s.get("calibration") or {}
    loop = s.get("closed_loop") or {}
    return {
        "run": name,
        "measured_attainment": s["attainment"],
        "predicted_attainment": plan.get("attainment"),
        "mean_e2e_s": s["e2e_ms"]["mean"] / 1000.0 if isinstance(s.get("e2e_ms"), dict) else None,
        "mean_rel_e2e_error": (s.get("predicted_e2e_error") or {}).get("mean_abs_rel_error"),
        "wall_s": s["_bench"]["wall_s"],
        "calibration": cal.get("source"),
        "probe_s": cal.get("probe_seconds"),
        "calibrate_step_s": cal.get("seconds"),
        "replans": len(loop.get("replans") or []),
        "load": f"{s['_bench']['load_before']} -> {s['_bench']['load_after']}",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "out" / "closed-loop-real")
    ap.add_argument("--load-procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-load", action="store_true", help="no competing-load runs")
    ap.add_argument(
        "--calibrate",
        default="auto",
        choices=["auto", "always", "never"],
        help="--calibrate of the first (sajax) run; the others run with auto and find its "
        "cached fit (auto: a fresh clone's default; a job under ~40 s predicted is too short "
        "to probe, so a small --n check wants always)",
    )
    args = ap.parse_args(argv)
    # a SIGTERM (timeout, kill) runs the finally blocks: the load processes go with the script
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if (args.out_dir / "cache").exists():
        shutil.rmtree(args.out_dir / "cache")  # the fresh clone's empty cache
    args.out_dir.mkdir(parents=True, exist_ok=True)
    requests = build(args)
    runs = {"sajax": run_job(args, requests, "sajax")}
    runs["fcfs"] = run_job(args, requests, "fcfs", "--policy", "fcfs")
    if not args.skip_load:
        half = runs["sajax"]["makespan_ms"] / 2000.0 + runs["sajax"].get("plan_time_s", 0.0)
        runs["loaded"] = run_job(args, requests, "loaded", load_at_s=half)
        runs["loaded-open"] = run_job(args, requests, "loaded-open", "--replan", "off",
                                      load_at_s=half)  # fmt: skip
    rows = [row(k, v) for k, v in runs.items()]
    sa, fc = runs["sajax"], runs["fcfs"]
    figures = {
        "predicted_minus_measured_points": 100 * (sa["plan"]["attainment"] - sa["attainment"]),
        "mean_rel_e2e_error": sa["predicted_e2e_error"]["mean_abs_rel_error"],
        "sajax_over_fcfs_attainment": sa["attainment"] / fc["attainment"]
        if fc["attainment"]
        else float("inf"),
        "sajax_mean_e2e_s": sa["e2e_ms"]["mean"] / 1000.0,
        "fcfs_mean_e2e_s": fc["e2e_ms"]["mean"] / 1000.0,
        "probe_share_of_job": sa["calibration"]["probe_seconds"] / sa["_bench"]["wall_s"],
        "cached_calibrate_step_s": fc["calibration"]["seconds"],
    }
    if "loaded" in runs:
        lo, op = runs["loaded"], runs["loaded-open"]
        figures["loaded_closed_over_open"] = (
            lo["attainment"] / op["attainment"] if op["attainment"] else float("inf")
        )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "n": args.n,
        "cpus": os.cpu_count(),
        "rows": rows,
        "figures": figures,
    }
    (args.out_dir / "closed-loop-real.json").write_text(json.dumps(result, indent=2, default=str))
    for r in rows:
        print(json.dumps(r, default=str))
    print(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
