"""The replica summary and report sections, from a results table with a ``replica`` column."""

from __future__ import annotations

import pyarrow as pa
import pytest

from batch_runner.replica_job import replica_summary
from batch_runner.report_replicas import replica_sections


def _results() -> pa.Table:
    return pa.table(
        {
            "id": ["a", "b", "c", "d", "e"],
            "replica": pa.array([0, 0, 1, 1, 1], pa.int64()),
            "ttft_ms": [10.0, 20.0, 5.0, 15.0, None],
            "e2e_ms": [100.0, 300.0, 50.0, 80.0, None],
            "slo_met": [True, False, True, True, False],
            "error": [None, None, None, None, "failed after 3 attempt(s): boom"],
            "weight": [1.0, 1.0, 1.0, 1.0, 1.0],
        }
    )


def test_replica_summary_counts_rows_attainment_and_load_per_replica():
    plan = {"replicas": 2, "dead_replicas": [1], "predicted_replicas": [{"attainment": 0.5}]}
    rows = replica_summary(_results(), plan)
    assert [r["rows"] for r in rows] == [2, 3]
    assert rows[0]["attainment"] == pytest.approx(0.5)
    assert rows[1]["attainment"] == pytest.approx(2 / 3)  # the error row is a miss
    assert rows[1]["errors"] == 1 and rows[1]["died"] and not rows[0]["died"]
    assert rows[0]["makespan_ms"] == 300.0 and rows[0]["busy_ms"] == pytest.approx(370.0)
    assert rows[0]["predicted_attainment"] == 0.5 and "predicted_attainment" not in rows[1]


def test_report_sections_list_every_replica_and_draw_its_timeline():
    sections = replica_sections(_results(), {"plan": {"replicas": 2}})
    titles = [t for t, _ in sections]
    assert titles == ["Replicas", "Timeline per replica"]
    assert sections[0][1].count("<tr>") == 3  # header + two replicas
    assert sections[1][1].startswith('<img alt="timeline per replica" src="data:image/png;base64,')


def test_no_replica_column_no_sections():
    assert replica_sections(_results().drop_columns(["replica"]), {}) == []


def test_assemble_adds_the_replica_column_and_keeps_an_input_one():
    from batch_runner.checkpoint import MEASUREMENT_SCHEMA
    from batch_runner.results import assemble

    requests = pa.table({"id": ["a", "b"], "prompt": ["x", "y"], "replica": ["mine", "too"]})
    row = {"rank": 0, "run": 0, "attempts": 1, "submit_ms": 0.0, "first_token_ms": 1.0}
    row |= {"finish_ms": 2.0, "output_text": "", "input_tokens": 1, "output_tokens": 2}
    row |= {"finish_reason": "stop", "engine": "sim"}
    m = pa.Table.from_pylist(
        [row | {"id": "b", "replica": 1}, row | {"id": "a", "replica": 0}],
        schema=MEASUREMENT_SCHEMA,
    )
    out = assemble(requests, m)
    assert out.column("replica").to_pylist() == [0, 1]
    assert out.column("input_replica").to_pylist() == ["mine", "too"]
    single = assemble(
        requests.drop_columns(["replica"]),
        m.drop_columns(["replica"]).append_column("replica", pa.nulls(2, pa.int64())),
    )
    assert "replica" not in single.column_names  # one engine: no replica column
