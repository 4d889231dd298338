"""Rebuild BENCHMARKS.md: its headline (everything above the first result section) stays, the
result sections are re-read from ``benchmarks/results/*.md`` (headings shifted one level down,
code blocks untouched).

    .venv/bin/python benchmarks/collect.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = [
    "anneal.md",
    "fidelity.md",
    "planner.md",
    "planner_table.md",
    "cpu-job.md",
    "llamacpp.md",
    "workloads-calibration.md",
    "job-runner.md",
    "requests-io.md",
    "turbomind.md",
]
MARKER = "<!-- from benchmarks/results/"


def demote_headings(text: str) -> str:
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if not fenced and re.match(r"#+ ", line) else line)
    return "\n".join(out)


def main() -> None:
    target = ROOT / "BENCHMARKS.md"
    head = target.read_text().split(MARKER, 1)[0].rstrip() + "\n"
    names = ORDER + sorted(
        p.name for p in (ROOT / "benchmarks" / "results").glob("*.md") if p.name not in ORDER
    )
    sections = [
        f"{MARKER}{name} -->\n" + demote_headings((ROOT / "benchmarks/results" / name).read_text())
        for name in names
    ]
    target.write_text(head + "\n\n" + "\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
