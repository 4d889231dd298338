"""Markdown tables of ``benchmarks/replicas.py`` runs (the JSON lines it appends with --out).

.venv/bin/python benchmarks/replicas_table.py benchmarks/results/replicas_*.jsonl
"""

from __future__ import annotations

import json
import sys


def quality(rec) -> list[str]:
    out = [
        f"Command: `{rec['command']}`; {rec['date']}; {rec['machine']}",
        f"Load: before `{rec['uptime_before']}`, after `{rec['uptime_after']}`",
        "",
        "| R | speeds | objective | plan | plan wall (s) | W/R (s) | makespan (s) | "
        "makespan / (W/R) | attainment (ref sim) | G (1/s) | mean e2e (s) | best seed | "
        "joint steps | rebalance (LPT kept, moves) | tail polish (replicas) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rec["quality"]:
        joint = r.get("joint") or {}
        tail = r.get("tail_lpt") or {}
        reb = r.get("rebalance") or {}
        reb = f"{'yes' if reb['kept'] else 'no'}, {reb['moves']}" if reb else "-"
        out.append(
            f"| {r['R']} | {'1, 1/2, ...' if r.get('hetero') else 'equal'} | "
            f"{r.get('objective', 'goodput')} | {r['plan']} | {r['wall_s']:.0f} | "
            f"{r['work_over_R_s']:.1f} | {r['makespan_s']:.1f} | {r['makespan_ratio']:.3f} | "
            f"{100 * r['attainment']:.2f} % | {r.get('goodput', float('nan')):.5f} | "
            f"{r.get('mean_e2e_s', float('nan')):.1f} | {r['best_seed']} | "
            f"{joint.get('steps', '-')} | {reb} | {tail.get('replicas_changed', '-')} |"
        )
    return out


def kill(rec) -> list[str]:
    rows = rec["kill"]
    mid = [r for r in rows if r["dead"]]
    out = [
        f"Command: `{rec['command']}`; {rec['date']}; {rec['machine']}",
        f"Load: before `{rec['uptime_before']}`, after `{rec['uptime_after']}`",
        "",
        f"{len(rows)} runs; rows lost: {sum(r['lost'] for r in rows)}, rows doubled: "
        f"{sum(r['doubled'] for r in rows)}; the victim still had work (death seen, its rows "
        f"re-planned) in {len(mid)} runs, had finished its share in {len(rows) - len(mid)}.",
        "",
        "| trial | killed at result | victim | dead | re-plans | lost | doubled | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['trial']} | {r['kill_at_result']} | {r['victim']} | {r['dead']} | "
            f"{r['replans']} | {r['lost']} | {r['doubled']} | {r['wall_s']:.1f} |"
        )
    return out


def scale(rec) -> list[str]:
    out = [
        f"Command: `{rec['command']}`; {rec['date']}; {rec['machine']}",
        f"Load: before `{rec['uptime_before']}`, after `{rec['uptime_after']}`",
        "",
        "| n | R | stages | wall (s) | max RSS (GB) | attainment (fast model) | makespan (s) | "
        "seed energy: least_loaded/fcfs, round_robin/fcfs, best seed | stage energies | "
        "stage ends (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rec["scale"]:
        se = r["seed_energy"]
        seeds = (
            f"{se.get('least_loaded/fcfs', float('nan')):.4f}, "
            f"{se.get('round_robin/fcfs', float('nan')):.4f}, {r['best_seed']}"
        )
        stages = ", ".join(f"{k} {v:.4f}" for k, v in r["stages"].items())
        ends = ", ".join(f"{k} {v:.0f}" for k, v in r["stage_end_s"].items())
        out.append(
            f"| {r['n']} | {r['R']} | {'seeds + polish' if r.get('seeds_only') else 'all'} | "
            f"{r['wall_s']:.0f} | {r['max_rss_gb']:.2f} | "
            f"{100 * r['attainment']:.2f} % | {r['makespan_s']:.0f} | {seeds} | {stages} | "
            f"{ends} |"
        )
    return out


def overhead(rec) -> list[str]:
    out = [
        f"Command: `{rec['command']}`; {rec['date']}; {rec['machine']}",
        f"Load: before `{rec['uptime_before']}`, after `{rec['uptime_after']}`",
        "",
        "| rep | requests | in-process (s) | one Ray actor (s) | wall overhead per request (ms) | "
        "CPU in-process (s) | CPU driver + actor (s) | CPU overhead per request (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rec["overhead"]:
        out.append(
            f"| {r['rep']} | {r['n']} | {r['local_s']:.2f} | {r['ray_s']:.2f} | "
            f"{r['overhead_ms_per_request']:.3f} | {r.get('local_cpu_s', float('nan')):.2f} | "
            f"{r.get('ray_cpu_s', float('nan')):.2f} | "
            f"{r.get('cpu_overhead_ms_per_request', float('nan')):.3f} |"
        )
    return out


def main() -> None:
    render = {"quality": quality, "kill": kill, "scale": scale, "overhead": overhead}
    for path in sys.argv[1:]:
        for line in open(path):
            rec = json.loads(line)
            for mode, fn in render.items():
                if mode in rec:
                    print(f"### {mode}\n")
                    print("\n".join(fn(rec)) + "\n")


if __name__ == "__main__":
    main()
