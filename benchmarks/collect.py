"""Check BENCHMARKS.md, the one-page summary: at most MAX_LINES lines and every table row links
to a result file of ``benchmarks/results/`` that exists. Exit 1 with the faults listed, else print
the page's size; result files that no row links to yet are listed as notes (an engineer adds a
result file, the page's editor adds its rows).

    .venv/bin/python benchmarks/collect.py

(The page used to be rebuilt from the result files by this script; the result files now stay in
``benchmarks/results/`` and the page keeps one row per target that links to them.)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 150
LINK = re.compile(r"\]\((benchmarks/results/[^)#\s]*)(#[^)\s]*)?\)")


def page_faults(page: Path = ROOT / "BENCHMARKS.md") -> list[str]:
    """What is wrong with the page (empty when it is fine)."""
    lines = page.read_text().splitlines()
    faults = []
    if len(lines) > MAX_LINES:
        faults.append(f"{page.name} has {len(lines)} lines (at most {MAX_LINES})")
    for no, line in enumerate(lines, 1):
        targets = LINK.findall(line)
        for target, _anchor in targets:
            if target.endswith("/"):
                continue
            if not (ROOT / target).is_file():
                faults.append(f"line {no}: {target} does not exist")
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        is_row = line.startswith("|") and not set(line) <= set("|-: ")
        is_header = is_row and cells[:2] in (["target", "figure now"], ["measurement", "figure"])
        if is_row and not is_header and not targets:
            faults.append(f"line {no}: a row without a link to its result file: {line[:60]}")
    return faults


def unlinked_results(page: Path = ROOT / "BENCHMARKS.md") -> list[str]:
    """Result files that no row of the page links to (new results waiting for their row)."""
    linked = {Path(target).name for target, _ in LINK.findall(page.read_text())}
    results = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    return [f"benchmarks/results/{p.name}" for p in results if p.name not in linked]


def main() -> None:
    faults = page_faults()
    for fault in faults:
        print(fault, file=sys.stderr)
    for name in unlinked_results():
        print(f"note: {name} is not linked from BENCHMARKS.md yet (add its rows)", file=sys.stderr)
    if faults:
        sys.exit(1)
    print(f"BENCHMARKS.md: {len((ROOT / 'BENCHMARKS.md').read_text().splitlines())} lines, ok")


if __name__ == "__main__":
    main()
