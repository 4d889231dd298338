"""Property: on generated request tables, ``sajax validate`` exits 0 iff ``sajax-batch --engine
sim`` does, in both ``--on-bad-rows`` modes, and neither ever exits 1 (a traceback).

The tables are drawn from the request contract (``batch_runner.request_contract``): every column
in several Arrow types, values at, inside and beyond each range's bounds (the issue's 2**62,
2**63 - 1, 1e300, 1.7e308 among them), NaN and infinities, chats with allowed and unknown roles
in any order, rows with both or neither of prompt and messages, duplicate ids, and input columns
named like output or reject columns. Both commands run in-process (click's CliRunner); the job
runs FCFS on the sim engine (the planner is not what is tested here, and compiling it per table
size would take most of the time budget). When the job exits 0, every input row is in the results
or the rejects file exactly once, and the summary is strict JSON with a finite attainment.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from batch_runner import cli
from batch_runner.request_contract import MESSAGES_TYPE

BIG_INTS = [0, -1, 1, 2**20, 2**20 + 1, 2**31 - 1, 2**62, 2**63 - 1]
BIG_FLOATS = [0.0, -1.0, 1e-7, 1e-6, 1e6, 1.5e6, 1e10, 1.1e10, 1e300, 1.7e308, 5e-324]
ODD_FLOATS = [math.nan, math.inf, -math.inf]
EDGE_INTS = [1, 2**20]  # valid, at the bounds
EDGE_FLOATS = [1e-6, 1.0, 1e6, 1e10]  # valid for SLOs (>= 0) and weights (>= 1e-6) alike

ints = st.one_of(st.none(), st.integers(1, 40), st.sampled_from(BIG_INTS))
good_ints = st.one_of(st.none(), st.integers(1, 40), st.sampled_from(EDGE_INTS))
numbers = st.one_of(
    st.none(),
    st.floats(0.5, 5e4),
    st.sampled_from(BIG_FLOATS),
    st.sampled_from(ODD_FLOATS),
)
good_numbers = st.one_of(st.none(), st.floats(0.5, 5e4), st.sampled_from(EDGE_FLOATS))
message = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "tool", "wizard", "User"])
            | st.none(),
            "content": st.sampled_from(["hi", "", "tell me more"]) | st.none(),
        }
    ),
)
good_chat = st.tuples(
    st.booleans(), st.lists(st.sampled_from(["user", "assistant", "tool"]), max_size=3)
).map(
    lambda t: (
        [{"role": "system", "content": "be brief"}] * t[0]
        + [{"role": r, "content": "x"} for r in t[1]]
        + [{"role": "user", "content": "hi"}]
    )
)
chats = st.one_of(st.none(), good_chat, st.lists(message, max_size=4))
CLASHING = ["error", "rank", "output_text", "e2e_ms", "reject_reason", "input_error", "note"]

COLUMNS = {  # column -> (any cell, a cell the contract accepts, Arrow types it may be written as)
    "id": (st.sampled_from("abcdef") | st.none(), None, [pa.string()]),
    "prompt": (st.sampled_from(["hi", "", "a longer prompt"]) | st.none(), None, [pa.string()]),
    "messages": (chats, good_chat, [MESSAGES_TYPE]),
    "task": (st.sampled_from(["chat", "code", ""]) | st.none(), None, [pa.string()]),
    "max_new_tokens": (ints, good_ints, [pa.int64(), pa.uint64(), pa.int32()]),
    "output_tokens_hint": (ints, good_ints, [pa.int64(), pa.uint64()]),
    "slo_e2e_ms": (numbers, good_numbers, [pa.float64(), pa.int64()]),
    "slo_ttft_ms": (numbers, good_numbers, [pa.float64(), pa.float32()]),
    "slo_tpot_ms": (numbers, good_numbers, [pa.float64()]),
    "weight": (numbers, good_numbers, [pa.float64(), pa.float32()]),
    "ignore_eos": (st.booleans() | st.none(), None, [pa.bool_()]),
}


def _array(values: list, typ: pa.DataType) -> pa.Array:
    """``values`` as ``typ``, the way a user's export would write them (no silent wrap)."""
    if pa.types.is_integer(typ):
        info = (0, 2**64 - 1) if pa.types.is_unsigned_integer(typ) else (-(2**63), 2**63 - 1)
        if pa.types.is_int32(typ):
            info = (-(2**31), 2**31 - 1)
        values = [None if v is None or not info[0] <= v <= info[1] else v for v in values]
        if typ in (pa.int64(), pa.int32()) and any(isinstance(v, float) for v in values):
            values = [None if v is None or not math.isfinite(v) else int(v) for v in values]
    if pa.types.is_float32(typ):  # float32 has no 1e300: write those as inf, like pandas would
        values = [v if v is None or abs(v) < 3e38 or math.isnan(v) else math.inf for v in values]
    return pa.array(values, typ)


@st.composite
def request_tables(draw) -> pa.Table:
    """A table of 1..6 rows; a third of them "clean": cells the contract accepts (at their
    bounds too), one id per row, prompt or messages but not both."""
    n = draw(st.integers(1, 6))
    clean = draw(st.integers(0, 2)) == 0
    names = draw(st.sets(st.sampled_from(sorted(set(COLUMNS) - {"prompt", "messages"}))))
    pairs = (
        [{"prompt"}, {"messages"}] if clean else [{"prompt"}, {"messages"}, {"prompt", "messages"}]
    )
    names |= draw(st.sampled_from(pairs))
    columns = {}
    for name in sorted(names):
        anything, good, types = COLUMNS[name]
        if clean and name == "id":
            values = [f"r{i}" for i in range(n)]
        elif clean and name in ("prompt", "task"):
            values = ["hi" if name == "prompt" else "chat"] * n
        else:
            cell = good if clean and good is not None else anything
            values = [draw(cell) for _ in range(n)]
        columns[name] = _array(values, draw(st.sampled_from(types)))
    for name in draw(st.sets(st.sampled_from(CLASHING), max_size=2)):
        columns[name] = pa.array([draw(st.integers(-5, 5)) for _ in range(n)], pa.int64())
    return pa.table(columns)


def _exit(result) -> int:
    text = result.output + (repr(result.exception) if result.exception else "")
    assert result.exit_code != 1 and "Traceback" not in result.output, text
    if result.exception is not None:  # only click's own exit (SystemExit) is allowed
        assert isinstance(result.exception, SystemExit), text
    return result.exit_code


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(table=request_tables(), mode=st.sampled_from(["error", "skip"]))
def test_validate_and_the_sim_job_agree_and_never_crash(table, mode):
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "in.parquet", Path(tmp) / "results.parquet"
        pq.write_table(table, path)
        validated = _exit(runner.invoke(cli.main, ["validate", str(path), "--on-bad-rows", mode]))
        summary = Path(tmp) / "summary.json"
        args = [str(path), "--out", str(out), "--engine", "sim", "--policy", "fcfs"]
        args += ["--on-bad-rows", mode, "--summary-json", str(summary), "-q"]
        ran = _exit(runner.invoke(cli.batch_main, args))
        event(f"{mode}: validate {validated}, sajax-batch {ran}")
        assert validated in (0, 2) and ran in (0, 2)
        assert (validated == 0) == (ran == 0)
        if ran == 0:
            rows = pq.read_table(out).num_rows
            rejects = Path(tmp) / "results.rejects.parquet"
            rejected = pq.read_table(rejects).num_rows if rejects.exists() else 0
            assert rows + rejected == table.num_rows
            assert mode == "skip" or rejected == 0
            report = json.loads(summary.read_text())
            assert report["rows"] == rows and 0.0 <= report["attainment"] <= 1.0
