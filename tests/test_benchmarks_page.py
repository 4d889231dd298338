"""BENCHMARKS.md stays one page whose every row links to an existing result file."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_collect", ROOT / "benchmarks" / "collect.py")
collect = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collect)


def test_the_page_is_one_page_and_every_row_links_to_its_result_file():
    assert collect.page_faults() == []


def test_a_row_without_a_link_a_missing_file_and_a_long_page_are_faults(tmp_path):
    page = tmp_path / "BENCHMARKS.md"
    rows = [
        "| target | figure now | met | command | date |",
        "|---|---|---|---|---|",
        "| a target | 3.5x | no | `x.py` | 2026-12-04 |",
        "| b target | [2x](benchmarks/results/no-such-file.md) | yes | `y.py` | 2026-12-04 |",
    ]
    page.write_text("\n".join(rows + [""] * collect.MAX_LINES))
    faults = collect.page_faults(page)
    assert any("lines (at most" in f for f in faults)
    assert any(f.startswith("line 3: a row without a link") for f in faults)
    assert any("no-such-file.md does not exist" in f for f in faults)
    assert "benchmarks/results/anneal.md" in collect.unlinked_results(page)
