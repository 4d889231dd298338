"""Check BENCHMARKS.md, the one-page summary: at most MAX_LINES lines, every table row of a
target links to a result file of ``benchmarks/results/`` that exists, and every result file is
linked from the page. Exit 1 with the faults listed, else print the page's size.

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
    linked: set[str] = set()
    for no, line in enumerate(lines, 1):
        targets = LINK.findall(line)
        for target, _anchor in targets:
            if target.endswith("/"):
                continue
            linked.add(Path(target).name)
            if not (ROOT / target).is_file():
                faults.append(f"line {no}: {target} does not exist")
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        is_row = line.startswith("|") and not set(line) <= set("|-: ")
        is_header = is_row and cells[:2] in (["target", "figure now"], ["measurement", "figure"])
        if is_row and not is_header and not targets:
            faults.append(f"line {no}: a row without a link to its result file: {line[:60]}")
    for result in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        if result.name not in linked:
            faults.append(f"benchmarks/results/{result.name} is not linked from {page.name}")
    return faults


def main() -> None:
    faults = page_faults()
    for fault in faults:
        print(fault, file=sys.stderr)
    if faults:
        sys.exit(1)
    print(f"BENCHMARKS.md: {len((ROOT / 'BENCHMARKS.md').read_text().splitlines())} lines, ok")


if __name__ == "__main__":
    main()
