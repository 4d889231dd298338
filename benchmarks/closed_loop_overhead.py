"""What a valid cached fit adds to a job: the calibrate step with a cache hit, timed.

Starts the llamacpp engine (default model), writes a cache entry for this machine, engine,
model and slots (the shipped profile's numbers with a small fit error: the time of the cached
path does not depend on them; ``--probe`` makes a real probe instead, which a loaded machine
makes slow and poor), then times ``calibrate_step`` with ``--calibrate auto`` on ``make run``'s
200-row file: the predicted job time it needs first (tokenizing every prompt and a reference
simulation), the cache lookup and the TOML read.

    .venv/bin/python benchmarks/closed_loop_overhead.py --requests out/requests.parquet
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batch_runner import probe  # noqa: E402
from batch_runner.job.config import JobConfig  # noqa: E402
from batch_runner.job.loop_step import calibrate_step  # noqa: E402
from batch_runner.presets import load_presets  # noqa: E402
from batch_runner.requests import read_requests  # noqa: E402
from sajax.profiles import load_profile  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=Path, default=ROOT / "out" / "requests.parquet")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--probe", action="store_true", help="probe for the cache entry")
    args = ap.parse_args(argv)
    os.environ[probe.CACHE_ENV] = tempfile.mkdtemp(prefix="sajax-cache-")
    from batch_runner.engines.llamacpp import LlamaCppEngine

    presets = load_presets(ROOT / "datasets" / "slo_presets.toml", scale="cpu")
    table = read_requests(args.requests, slo_config=presets).table
    engine = LlamaCppEngine(slots=4)
    engine.start()
    try:
        config = JobConfig(input=args.requests, out=Path("unused.parquet"), quiet=True)
        if args.probe:
            config.calibrate = "always"
            t = time.perf_counter()
            cal = calibrate_step(engine, config, table)
            print(f"probe: {time.perf_counter() - t:.1f} s, {cal.points} points")
            text = cal.path.read_text()
            text = re.sub(r"mean_abs_rel_error = \S+", "mean_abs_rel_error = 0.01", text)
            cal.path.write_text(text)
        else:
            base = load_profile("default")
            when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            fit = {"mean_abs_rel_error": 0.01, "rows": 0}
            planted = probe.Calibration(base, "probe", None, fit, when, 0.0, 0)
            probe.save(probe.probe_key(engine, int(base.slots)), planted)
        config.calibrate = "auto"
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            hit = calibrate_step(engine, config, table)
            times.append(time.perf_counter() - t)
            assert hit.source == "cache", hit.source
        print(
            f"cached fit, {table.num_rows} rows: calibrate step {min(times):.3f} s min, "
            f"{max(times):.3f} s max over {args.repeats}; load {os.getloadavg()}"
        )
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
