"""Output assembly and summary: input order, columns, SLO semantics shared with sajax.metrics."""

from __future__ import annotations

import pyarrow as pa
import pytest

from batch_runner.checkpoint import MEASUREMENT_SCHEMA
from batch_runner.results import OUTPUT_COLUMNS, assemble, row_slo_met, summarize


def _requests():
    return pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "prompt": ["p"] * 4,
            "task": ["chat", "chat", "code", "code"],
            "slo_e2e_ms": [1000.0, 1000.0, None, None],
            "slo_ttft_ms": [None, None, 100.0, None],
            "slo_tpot_ms": [None, None, None, None],
            "weight": [1.0, 3.0, 1.0, 1.0],
            "extra": [1, 2, 3, 4],  # an unknown input column, carried through
        }
    )


def _measurements():
    rows = [  # completion order differs from input order
        dict(id="c", rank=0, first_token_ms=50.0, finish_ms=850.0, output_tokens=9),
        dict(id="a", rank=1, first_token_ms=200.0, finish_ms=900.0, output_tokens=1),
        dict(id="d", rank=3, first_token_ms=300.0, finish_ms=3000.0, output_tokens=4),
        dict(id="b", rank=2, error="failed after 3 attempt(s): boom"),
    ]
    full = []
    for r in rows:
        base = {name: None for name in MEASUREMENT_SCHEMA.names}
        base.update(run=0, attempts=1, submit_ms=0.0, output_text="", engine="stub")
        if r.get("error") is None:
            base.update(input_tokens=5, finish_reason="stop", predicted_e2e_ms=1000.0)
        base.update(r)
        full.append(base)
    return pa.Table.from_pylist(full, schema=MEASUREMENT_SCHEMA)


def test_assemble_keeps_input_order_and_columns():
    req = _requests()
    out = assemble(req, _measurements())
    assert out.column_names == req.column_names + OUTPUT_COLUMNS.names
    assert out.column("id").to_pylist() == ["a", "b", "c", "d"]
    assert out.column("extra").to_pylist() == [1, 2, 3, 4]
    assert out.column("rank").to_pylist() == [1, 2, 0, 3]
    for field in OUTPUT_COLUMNS:
        assert out.schema.field(field.name).type == field.type


def test_assemble_slo_semantics():
    out = assemble(_requests(), _measurements()).to_pydict()
    # a: e2e 900 <= 1000 met; one output token -> tpot 0.
    assert out["slo_met"][0] is True and out["tpot_ms"][0] == 0.0
    # b: an error row: no latencies, slo_met False.
    assert out["slo_met"][1] is False and out["e2e_ms"][1] is None and out["ttft_ms"][1] is None
    # c: ttft 50 <= 100 met; tpot = (850 - 50) / 8.
    assert out["slo_met"][2] is True and out["tpot_ms"][2] == pytest.approx(100.0)
    # d: best effort (no SLO): slo_met null, latencies still reported.
    assert out["slo_met"][3] is None and out["e2e_ms"][3] == pytest.approx(3000.0)


def test_assemble_refuses_missing_or_unknown_rows():
    m = _measurements()
    with pytest.raises(ValueError, match="no result"):
        assemble(_requests(), m.slice(0, 3))
    extra = pa.concat_tables([m, m.slice(0, 1).set_column(0, "id", pa.array(["zz"]))])
    with pytest.raises(ValueError, match="not in the input"):
        assemble(_requests(), extra)


def test_summary_numbers():
    s = summarize(assemble(_requests(), _measurements()), engine="stub")
    assert s["rows"] == 4 and s["errors"] == 1 and s["finished"] == 3
    # rows with an SLO: a (w1, met), b (w3, error = miss), c (w1, met) -> 2 / 5.
    assert s["with_slo"] == 3
    assert s["attainment"] == pytest.approx(2.0 / 5.0)
    assert s["attainment_per_task"]["chat"]["attainment"] == pytest.approx(0.25)
    assert s["attainment_per_task"]["code"]["attainment"] == pytest.approx(1.0)
    # G: weighted hits over summed e2e of finished rows (a, c, d) in seconds.
    assert s["G"] == pytest.approx(2.0 / ((900 + 850 + 3000) / 1000.0), rel=1e-5)
    assert s["makespan_ms"] == pytest.approx(3000.0)
    assert s["e2e_ms"]["p50"] == pytest.approx(900.0)
    assert s["predicted_e2e_error"]["rows"] == 3
    assert s["predicted_e2e_error"]["mean_abs_error_ms"] == pytest.approx((100 + 150 + 2000) / 3)
    assert s["engine"] == "stub"


def test_row_slo_met_matches_assemble():
    req = _requests().to_pylist()
    assert row_slo_met(req[0], 200.0, 900.0, 1) is True
    assert row_slo_met(req[0], 200.0, 1000.5, 1) is False
    assert row_slo_met(req[3], 1.0, 1e9, 3) is None
    assert row_slo_met(req[2], 99.0, 5000.0, 1) is True  # only a TTFT bound
    assert row_slo_met(req[2], 101.0, 200.0, 1) is False


def test_progress_counts_rows_done_before_a_resume():
    from batch_runner.progress import JobProgress

    bar = JobProgress(total=5, initial=3, quiet=True)
    bar.seed(met=[True, None, False], weight=[1.0, 5.0, 3.0], errors=1)
    assert bar.attainment == pytest.approx(1.0 / 4.0)
    bar.update(met=True, weight=4.0)
    assert bar.attainment == pytest.approx(5.0 / 8.0) and bar.errors == 1
    bar.update(met=None, error=True)
    assert bar.errors == 2 and bar.attainment == pytest.approx(5.0 / 8.0)
    bar.close()


def test_assemble_and_summarize_take_every_value_a_valid_file_can_hold():
    """At the contract's bounds (2**20 tokens, weights 1e-6 and 1e6, SLOs of 1e10 ms), and with
    an engine that reports more tokens than float64 holds exactly, nothing fails or overflows."""
    req = _requests().drop_columns(["weight", "slo_e2e_ms"])
    req = req.append_column("weight", pa.array([1e6, 1e-6, 1e6, 1.0]))
    req = req.append_column("slo_e2e_ms", pa.array([1e10, 0.0, 1e10, None]))
    m = _measurements()
    m = m.set_column(
        m.schema.get_field_index("output_tokens"),
        "output_tokens",
        pa.array([2**53 + 1, 2**20, 2**62, None], pa.int64()),  # rows c, a, d, b (error)
    )
    out = assemble(req, m)
    assert out["output_tokens"].to_pylist() == [2**20, None, 2**53 + 1, 2**62]  # as measured
    s = summarize(out)
    assert 0.0 <= s["attainment"] <= 1.0 and s["G"] >= 0.0
    assert s["attainment_per_task"]["code"]["attainment"] == pytest.approx(1e6 / (1e6 + 1e-6))


def test_an_input_column_named_like_an_output_column_is_kept_renamed():
    req = _requests().append_column("error", pa.array(["mine"] * 4))
    req = req.append_column("input_error", pa.array(["taken"] * 4))
    out = assemble(req, _measurements())
    assert out["input_input_error"].to_pylist() == ["mine"] * 4
    assert out["input_error"].to_pylist() == ["taken"] * 4
    assert out["error"].null_count == 3  # the job's own column: one error row
