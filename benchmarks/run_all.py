"""Run the benchmark suite (`make bench`), one script after another, and say where results go.

Each script prints its own table and writes (or documents) its results; BENCHMARKS.md records
them with the command, the machine and the date. The whole suite takes about an hour on a
2-core CPU; pass names to run a subset::

    .venv/bin/python benchmarks/run_all.py                 # everything
    .venv/bin/python benchmarks/run_all.py orlib fidelity  # a subset
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, arguments); cheap ones first
SUITE: dict[str, tuple[str, list[str]]] = {
    "requests-io": ("requests_io.py", ["--rows", "1000000"]),
    "job-runner": ("job_runner_overhead.py", ["--rows", "5000", "--repeat", "3"]),
    "fidelity": ("fidelity.py", []),
    "orlib": ("orlib_wt.py", []),
    "anneal-speed": ("anneal_speed.py", []),
    "planner-bruteforce": ("planner_bruteforce.py", ["--instances", "200"]),
    "planner-table": ("planner_table.py", ["--budget", "10", "--long-factor", "20"]),
    "planner-scale": ("planner_scale.py", ["--sizes", "10000", "100000"]),
    "llamacpp": ("llamacpp_throughput.py", ["--repeats", "3"]),
    "calibration": ("calibration_fit.py", []),
    "cpu-job": ("cpu_job.py", []),
}


def main(argv: list[str]) -> int:
    names = argv or list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(SUITE)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        script, args = SUITE[name]
        print(f"\n=== {name}: {script} {' '.join(args)}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / script), *args])
        print(f"=== {name}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
