"""The request contract: normalization, defaults, presets, carried columns, and every bad input.

The property tests compare ``read_requests`` with a small row-by-row reference validator written
in plain Python (``reference_problems``): both must reject exactly the same rows, keep the rest in
input order, and lose none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_runner import request_contract
from batch_runner import requests as requests_mod
from batch_runner.errors import InputError
from batch_runner.parquet_io import write_parquet_atomic
from batch_runner.presets import SloPresets, TaskPreset
from batch_runner.requests import (
    DEFAULT_MAX_NEW_TOKENS,
    MESSAGES_TYPE,
    NORMALIZED_COLUMNS,
    NORMALIZED_SCHEMA,
    read_requests,
)

from .test_parquet_io import BAD_FILE_KINDS, bad_files, every_type_table

NAN, INF = float("nan"), float("inf")


def write(tmp_path: Path, columns: dict, name: str = "requests.parquet", **kwargs) -> Path:
    path = tmp_path / name
    pq.write_table(pa.table(columns), path, **kwargs)
    return path


def msgs(*contents: str | None) -> list[dict]:
    return [{"role": "user", "content": c} for c in contents]


# --- normalization ---------------------------------------------------------------------------


def test_minimal_file_gets_every_default(tmp_path):
    path = write(tmp_path, {"prompt": ["a", "b", "c"]})
    result = read_requests(path)
    t = result.table
    assert t.schema.equals(NORMALIZED_SCHEMA)
    assert t["id"].to_pylist() == ["0", "1", "2"]
    assert t["task"].to_pylist() == ["default"] * 3
    assert t["max_new_tokens"].to_pylist() == [DEFAULT_MAX_NEW_TOKENS] * 3
    assert t["weight"].to_pylist() == [1.0] * 3
    assert t["ignore_eos"].to_pylist() == [False] * 3
    for name in ("slo_e2e_ms", "slo_ttft_ms", "slo_tpot_ms", "output_tokens_hint", "messages"):
        assert t[name].null_count == 3, name
    assert result.rejects is None
    assert result.source == path
    assert result.num_input_rows == 3


def test_row_values_are_kept_and_cast_to_the_contract_types(tmp_path):
    path = write(
        tmp_path,
        {
            "id": pa.array([10, 11], pa.int32()),
            "prompt": pa.array(["p", None], pa.large_string()),
            "messages": pa.array(
                [None, [{"content": "hi", "role": "user"}]],
                pa.large_list(pa.struct([("content", pa.large_string()), ("role", pa.string())])),
            ),
            "task": pa.array(["chat", "code"]).dictionary_encode(),
            "max_new_tokens": pa.array([5, 7], pa.uint16()),
            "slo_e2e_ms": pa.array([100, 0], pa.int32()),
            "slo_ttft_ms": pa.array([1.5, None], pa.float32()),
            "slo_tpot_ms": pa.nulls(2),
            "weight": pa.array([2, 3], pa.int8()),
            "output_tokens_hint": pa.array([0, 9], pa.int16()),
            "ignore_eos": [True, None],
        },
    )
    t = read_requests(path).table
    assert t.schema.equals(NORMALIZED_SCHEMA)
    assert t.to_pylist() == [
        {
            "id": "10",
            "prompt": "p",
            "messages": None,
            "task": "chat",
            "max_new_tokens": 5,
            "slo_e2e_ms": 100.0,
            "slo_ttft_ms": 1.5,
            "slo_tpot_ms": None,
            "weight": 2.0,
            "output_tokens_hint": 0,
            "ignore_eos": True,
        },
        {
            "id": "11",
            "prompt": None,
            "messages": [{"role": "user", "content": "hi"}],
            "task": "code",
            "max_new_tokens": 7,
            "slo_e2e_ms": 0.0,
            "slo_ttft_ms": None,
            "slo_tpot_ms": None,
            "weight": 3.0,
            "output_tokens_hint": 9,
            "ignore_eos": False,
        },
    ]


def test_unknown_columns_of_every_type_are_carried_unchanged_to_the_output(tmp_path):
    carried = every_type_table(n=6)
    columns = {
        "prompt": [f"q{i}" for i in range(6)],
        **dict(zip(carried.column_names, carried.columns, strict=True)),
    }
    path = write(tmp_path, columns)
    t = read_requests(path).table
    assert t.column_names == [*NORMALIZED_COLUMNS, *carried.column_names]
    written = pq.read_table(write_parquet_atomic(t, tmp_path / "out.parquet"))
    for name in carried.column_names:
        assert written[name].type == carried[name].type, name
        got, want = written[name].to_pylist(), carried[name].to_pylist()
        if name == "f64":
            assert np.allclose(
                np.array(got, dtype=float), np.array(want, dtype=float), equal_nan=True
            )
        else:
            assert got == want, name


def test_carried_columns_stay_aligned_when_rows_are_rejected(tmp_path):
    path = write(
        tmp_path,
        {
            "prompt": ["a", "", "c", "d"],
            "extra": pa.array([{"k": 0}, {"k": 1}, {"k": 2}, {"k": 3}]),
            "when": pa.array([0, 1, 2, 3], pa.timestamp("s")),
        },
    )
    result = read_requests(path, on_bad_rows="skip", batch_size=2)
    assert result.table["extra"].to_pylist() == [{"k": 0}, {"k": 2}, {"k": 3}]
    assert result.table["id"].to_pylist() == ["0", "2", "3"]
    assert result.rejects["extra"].to_pylist() == [{"k": 1}]
    assert result.rejects["reject_row"].to_pylist() == [1]


# --- presets ---------------------------------------------------------------------------------

PRESETS = SloPresets(
    tasks={
        "chat": TaskPreset(slo_ttft_ms=1000.0, slo_tpot_ms=50.0, max_new_tokens=64),
        "code": TaskPreset(slo_e2e_ms=5000.0),
    },
    scale="cpu",
)


def test_presets_fill_only_what_a_row_leaves_empty(tmp_path):
    path = write(
        tmp_path,
        {
            "prompt": ["a", "b", "c", "d", "e"],
            "task": ["chat", "chat", "code", "other", None],
            "max_new_tokens": pa.array([None, 8, None, None, None], pa.int64()),
            "slo_ttft_ms": pa.array([None, 10.0, None, None, None]),
            "slo_e2e_ms": pa.array([None, None, 7.0, None, None]),
        },
    )
    t = read_requests(path, slo_config=PRESETS).table
    assert t["max_new_tokens"].to_pylist() == [64, 8, DEFAULT_MAX_NEW_TOKENS, 256, 256]
    assert t["slo_ttft_ms"].to_pylist() == [1000.0, 10.0, None, None, None]
    assert t["slo_tpot_ms"].to_pylist() == [50.0, 50.0, None, None, None]
    assert t["slo_e2e_ms"].to_pylist() == [None, None, 7.0, None, None]
    assert t["task"].to_pylist() == ["chat", "chat", "code", "other", "default"]


def test_presets_from_a_mapping_or_the_shipped_file(tmp_path):
    path = write(tmp_path, {"prompt": ["a"], "task": ["classification"]})
    via_mapping = read_requests(path, slo_config={"classification": TaskPreset(slo_e2e_ms=1.0)})
    assert via_mapping.table["slo_e2e_ms"].to_pylist() == [1.0]
    shipped = Path(__file__).resolve().parents[2] / "datasets" / "slo_presets.toml"
    via_file = read_requests(path, slo_config=shipped)  # the file's default_scale
    assert via_file.table["slo_e2e_ms"][0].as_py() > 0
    assert via_file.table["max_new_tokens"][0].as_py() < DEFAULT_MAX_NEW_TOKENS


# --- row problems ----------------------------------------------------------------------------

# (columns, bad row ids, column named in the error, words of the reason)
ROW_PROBLEMS = {
    "missing prompt": (
        {"id": ["a", "b"], "prompt": ["x", None]},
        ["b"],
        "prompt",
        "both null",
    ),
    "missing prompt and messages": (
        {
            "id": ["a", "b"],
            "prompt": [None, "x"],
            "messages": pa.array([None, None], MESSAGES_TYPE),
        },
        ["a"],
        "prompt",
        "both null",
    ),
    "null messages without prompt column": (
        {"id": ["a", "b"], "messages": pa.array([msgs("x"), None], MESSAGES_TYPE)},
        ["b"],
        "messages",
        "null",
    ),
    "empty prompt": ({"id": ["a", "b"], "prompt": ["", "x"]}, ["a"], "prompt", "empty string"),
    "empty messages": (
        {"id": ["a", "b"], "messages": pa.array([[], msgs("x")], MESSAGES_TYPE)},
        ["a"],
        "messages",
        "empty list",
    ),
    "null message content": (
        {"id": ["a", "b"], "messages": pa.array([msgs("x", None), msgs("y")], MESSAGES_TYPE)},
        ["a"],
        "messages",
        "null message, role or content",
    ),
    "duplicate id": (
        {"id": ["a", "b", "a"], "prompt": ["x", "y", "z"]},
        ["a", "a"],
        "id",
        "not unique",
    ),
    "null id": ({"id": ["a", None], "prompt": ["x", "y"]}, ["row 1"], "id", "is null"),
    "negative slo": (
        {"id": ["a", "b"], "prompt": ["x", "y"], "slo_e2e_ms": [-1.0, 5.0]},
        ["a"],
        "slo_e2e_ms",
        "negative",
    ),
    "nan slo": (
        {"id": ["a", "b"], "prompt": ["x", "y"], "slo_ttft_ms": [1.0, NAN]},
        ["b"],
        "slo_ttft_ms",
        "NaN",
    ),
    "inf slo": (
        {"id": ["a", "b"], "prompt": ["x", "y"], "slo_tpot_ms": [INF, -INF]},
        ["a", "b"],
        "slo_tpot_ms",
        "infinite",
    ),
    "zero max_new_tokens": (
        {"id": ["a", "b"], "prompt": ["x", "y"], "max_new_tokens": [0, 3]},
        ["a"],
        "max_new_tokens",
        "0 or negative",
    ),
    "max_new_tokens beyond int64": (
        {
            "id": ["a", "b"],
            "prompt": ["x", "y"],
            "max_new_tokens": pa.array([2**64 - 1, 3], pa.uint64()),
        },
        ["a"],
        "max_new_tokens",
        "larger than",
    ),
    "zero weight": (
        {"id": ["a", "b"], "prompt": ["x", "y"], "weight": [1.0, 0.0]},
        ["b"],
        "weight",
        "is below 1e-06",
    ),
    "nan weight": (
        {"id": ["a", "b"], "prompt": ["x", "y"], "weight": [NAN, 1.0]},
        ["a"],
        "weight",
        "NaN",
    ),
    "negative hint": (
        {"id": ["a", "b"], "prompt": ["x", "y"], "output_tokens_hint": [-1, 1]},
        ["a"],
        "output_tokens_hint",
        "negative",
    ),
    "empty task": (
        {"id": ["a", "b"], "prompt": ["x", "y"], "task": ["", "chat"]},
        ["a"],
        "task",
        "empty",
    ),
}


@pytest.mark.parametrize("kind", list(ROW_PROBLEMS))
def test_each_row_problem_is_refused_naming_file_column_and_ids(tmp_path, kind):
    columns, bad_ids, column, words = ROW_PROBLEMS[kind]
    path = write(tmp_path, columns)
    with pytest.raises(InputError) as info:
        read_requests(path)
    message = info.value.format_message()
    assert str(path) in message and column in message and words in message
    assert "\n" not in message
    assert info.value.column == column
    assert info.value.row_count == len(bad_ids)
    for rid in bad_ids:
        assert rid in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("kind", list(ROW_PROBLEMS))
def test_each_row_problem_is_set_aside_with_its_reason_under_skip(tmp_path, kind):
    columns, bad_ids, column, words = ROW_PROBLEMS[kind]
    n = len(next(iter(columns.values())))
    path = write(tmp_path, columns)
    result = read_requests(path, on_bad_rows="skip")
    rejects = result.rejects
    assert rejects is not None and rejects.num_rows == len(bad_ids)
    assert result.table.num_rows + rejects.num_rows == n
    assert all(column in r and words in r for r in rejects["reject_reason"].to_pylist())
    assert set(rejects["reject_row"].to_pylist()).isdisjoint(
        int(i) for i in result.table["id"].to_pylist() if i.isdigit()
    )
    # the rejects keep the input columns as they were, so the file can be fixed and re-run
    assert rejects.column_names == [*columns, "reject_row", "reject_reason"]


def test_several_problems_in_one_row_are_all_given(tmp_path):
    path = write(tmp_path, {"prompt": [""], "slo_e2e_ms": [-1.0], "weight": [NAN]})
    reason = read_requests(path, on_bad_rows="skip").rejects["reject_reason"][0].as_py()
    assert "prompt is an empty string" in reason
    assert "slo_e2e_ms is negative" in reason
    assert "weight is NaN" in reason


def test_message_names_first_few_ids_and_a_count(tmp_path):
    ids = [f"r{i}" for i in range(40)]
    path = write(tmp_path, {"id": ids, "prompt": ["x"] * 40, "slo_e2e_ms": [-1.0] * 40})
    with pytest.raises(InputError) as info:
        read_requests(path, batch_size=7)
    message = info.value.format_message()
    assert "40 rows (ids: r0, r1, r2, r3, r4 and 35 more)" in message
    assert "r5" not in message


def test_duplicates_are_found_across_batches_and_row_numbers_are_global(tmp_path):
    ids = ["a", "b", "c", "d", "e", "f", "g", "b"]
    path = write(tmp_path, {"id": ids, "prompt": ["x"] * 8}, row_group_size=3)
    result = read_requests(path, on_bad_rows="skip", batch_size=3)
    assert result.rejects["reject_row"].to_pylist() == [1, 7]
    assert result.table["id"].to_pylist() == ["a", "c", "d", "e", "f", "g"]


def test_all_null_columns_are_accepted(tmp_path):
    path = write(tmp_path, {"prompt": ["x", "y"], "slo_e2e_ms": pa.nulls(2), "task": pa.nulls(2)})
    t = read_requests(path).table
    assert t["slo_e2e_ms"].to_pylist() == [None, None]
    assert t["task"].to_pylist() == ["default", "default"]


def test_long_prompts_are_fine_up_to_the_limit(tmp_path, monkeypatch):
    two_mb = "token " * (2**21 // 6)
    path = write(tmp_path, {"prompt": [two_mb, "x"]})
    assert read_requests(path).table["prompt"][0].as_py() == two_mb
    # the limit itself, checked with a small stand-in so the test stays fast
    monkeypatch.setattr(request_contract, "MAX_TEXT_BYTES", 1000)
    path = write(
        tmp_path,
        {
            "prompt": ["x" * 1001, "x" * 1000, None],
            "messages": pa.array([None, None, msgs("y" * 600, "z" * 600)], MESSAGES_TYPE),
        },
        name="long.parquet",
    )
    result = read_requests(path, on_bad_rows="skip")
    assert result.table["id"].to_pylist() == ["1"]
    assert result.rejects["reject_reason"].to_pylist() == [
        "prompt is longer than 1000 bytes",
        "messages content is longer than 1000 bytes",
    ]


# --- column problems: the whole file is refused, even under skip -----------------------------

COLUMN_PROBLEMS = {
    "prompt as int": ({"prompt": [1, 2]}, "prompt"),
    "slo as string": ({"prompt": ["x"], "slo_e2e_ms": ["100"]}, "slo_e2e_ms"),
    "max_new_tokens as float": ({"prompt": ["x"], "max_new_tokens": [1.0]}, "max_new_tokens"),
    "weight as bool": ({"prompt": ["x"], "weight": [True]}, "weight"),
    "ignore_eos as int": ({"prompt": ["x"], "ignore_eos": [1]}, "ignore_eos"),
    "id as float": ({"prompt": ["x"], "id": [1.5]}, "id"),
    "messages as strings": ({"messages": [["hi"]]}, "messages"),
    "messages with extra field": (
        {"messages": pa.array([[{"role": "u", "content": "c", "name": "n"}]])},
        "messages",
    ),
    "task as list": ({"prompt": ["x"], "task": [["a"]]}, "task"),
    "no prompt or messages column": ({"text": ["hello"], "Prompt": ["x"]}, "prompt"),
}


@pytest.mark.parametrize("on_bad_rows", ["error", "skip"])
@pytest.mark.parametrize("kind", list(COLUMN_PROBLEMS))
def test_column_problems_refuse_the_file(tmp_path, kind, on_bad_rows):
    columns, column = COLUMN_PROBLEMS[kind]
    path = write(tmp_path, columns)
    with pytest.raises(InputError) as info:
        read_requests(path, on_bad_rows=on_bad_rows)
    message = info.value.format_message()
    assert str(path) in message and f"{column}" in message and "\n" not in message
    assert info.value.column == column


def test_duplicate_column_names_refuse_the_file(tmp_path):
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["prompt", "prompt"])
    path = tmp_path / "dup.parquet"
    pq.write_table(table, path)
    with pytest.raises(InputError, match="more than one column named 'prompt'"):
        read_requests(path)


def test_empty_file_is_refused_with_a_clear_message(tmp_path):
    path = write(tmp_path, {"prompt": pa.array([], pa.string())})
    with pytest.raises(InputError, match="has no rows"):
        read_requests(path, on_bad_rows="skip")


@pytest.mark.parametrize("kind", BAD_FILE_KINDS)
def test_unreadable_files_are_input_errors(tmp_path, kind):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(InputError) as info:
        read_requests(path)
    assert str(path) in info.value.format_message()


def test_bad_on_bad_rows_value_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        read_requests(write(tmp_path, {"prompt": ["x"]}), on_bad_rows="ignore")


# --- property: read_requests agrees with a row-by-row reference --------------------------------


def reference_problems(row: dict, duplicated: set) -> bool:
    """True if the row is bad, by the rules of the contract's docstring, one row at a time."""
    prompt, messages = row.get("prompt"), row.get("messages")
    if prompt is None and messages is None:
        return True
    if prompt is not None and messages is not None:
        return True
    if prompt is not None and (prompt == "" or len(prompt.encode()) > requests_mod.MAX_TEXT_BYTES):
        return True
    if messages is not None:
        if len(messages) == 0 or any(
            m is None or m["role"] is None or m["content"] is None for m in messages
        ):
            return True
        roles = [m["role"] for m in messages]
        if any(r not in ("system", "user", "assistant", "tool") for r in roles):
            return True
        if "system" in roles[1:] or "user" not in roles or roles[-1] not in ("user", "tool"):
            return True
    if "id" in row and (row["id"] is None or row["id"] in duplicated):
        return True
    if row.get("task") == "":
        return True
    for name in ("slo_e2e_ms", "slo_ttft_ms", "slo_tpot_ms"):
        v = row.get(name)
        if v is not None and not (0 <= v <= 1e10):  # NaN fails every comparison
            return True
    w = row.get("weight")
    if w is not None and not (1e-6 <= w <= 1e6):
        return True
    if row.get("max_new_tokens") is not None and not 1 <= row["max_new_tokens"] <= 2**20:
        return True
    hint = row.get("output_tokens_hint")
    return hint is not None and not 0 <= hint <= 2**20


floats = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1e7),
    st.sampled_from([1e-6, 1e6, 1e10, 1e-7, 1.5e6, 1.1e10, 1e300]),  # at and beyond the bounds
)
texts = st.one_of(st.none(), st.just(""), st.text(max_size=20), st.text(min_size=30, max_size=80))
message = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "role": st.one_of(
                st.none(), st.just("user"), st.sampled_from(["system", "assistant", "tool", "bot"])
            ),
            "content": st.one_of(st.none(), st.text(max_size=10)),
        }
    ),
)
OPTIONAL = {
    "id": st.one_of(
        st.none(), st.sampled_from(["a", "b", "c", "d"]), st.text(min_size=1, max_size=8)
    ),
    "messages": st.one_of(st.none(), st.lists(message, max_size=3)),
    "task": st.one_of(st.none(), st.sampled_from(["", "chat", "code", "x"])),
    "max_new_tokens": st.one_of(
        st.none(), st.integers(-5, 10_000), st.sampled_from([2**20, 2**20 + 1, 2**62, 2**63 - 1])
    ),
    "slo_e2e_ms": floats,
    "slo_ttft_ms": floats,
    "slo_tpot_ms": floats,
    "weight": floats,
    "output_tokens_hint": st.one_of(
        st.none(), st.integers(-3, 500), st.sampled_from([2**20, 2**20 + 1, 2**62])
    ),
    "note": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),  # unknown, carried
}
TYPES = {
    "id": pa.string(),
    "prompt": pa.string(),
    "messages": MESSAGES_TYPE,
    "task": pa.string(),
    "max_new_tokens": pa.int64(),
    "output_tokens_hint": pa.int64(),
    "note": pa.int64(),
}


@st.composite
def request_tables(draw):
    names = draw(st.sets(st.sampled_from(sorted(OPTIONAL)), max_size=len(OPTIONAL)))
    if "messages" not in names or draw(st.booleans()):
        names = names | {"prompt"}
    n = draw(st.integers(1, 12))
    strategies = {**OPTIONAL, "prompt": texts}
    return {name: [draw(strategies[name]) for _ in range(n)] for name in sorted(names)}


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(columns=request_tables(), batch_size=st.sampled_from([1, 3, 64]))
def test_read_requests_agrees_with_the_reference_and_loses_no_row(tmp_path, columns, batch_size):
    n = len(next(iter(columns.values())))
    table = pa.table({k: pa.array(v, TYPES.get(k, pa.float64())) for k, v in columns.items()})
    path = tmp_path / "prop.parquet"
    pq.write_table(table, path)
    rows = table.to_pylist()
    ids = [r["id"] for r in rows if "id" in r and r["id"] is not None]
    duplicated = {i for i in ids if ids.count(i) > 1}
    expected_bad = [i for i, r in enumerate(rows) if reference_problems(r, duplicated)]

    result = read_requests(path, on_bad_rows="skip", batch_size=batch_size)
    got_bad = [] if result.rejects is None else result.rejects["reject_row"].to_pylist()
    assert got_bad == expected_bad
    assert result.table.num_rows + len(got_bad) == n
    if result.rejects is not None:
        assert all(result.rejects["reject_reason"].to_pylist())
    good = [i for i in range(n) if i not in set(expected_bad)]
    want_ids = [rows[i]["id"] if "id" in columns else str(i) for i in good]
    assert result.table["id"].to_pylist() == want_ids  # input order, nothing doubled
    if "note" in columns:
        assert result.table["note"].to_pylist() == [rows[i]["note"] for i in good]
    t = result.table
    assert pc.all(pc.greater(t["max_new_tokens"], 0)).as_py() in (True, None)
    assert pc.all(pc.greater(t["weight"], 0)).as_py() in (True, None)

    if expected_bad:
        with pytest.raises(InputError):
            read_requests(path, batch_size=batch_size)
    else:
        assert read_requests(path, batch_size=batch_size).table.equals(result.table)


def test_a_fixed_rejects_file_can_be_read_again(tmp_path):
    """Re-running a rejects file: its old reject columns are carried, renamed in the new rejects."""
    path = write(
        tmp_path,
        {
            "prompt": ["fixed", ""],
            "reject_row": [4, 9],
            "reject_reason": ["prompt is an empty string", "prompt is an empty string"],
        },
    )
    result = read_requests(path, on_bad_rows="skip")
    assert result.table["reject_row"].to_pylist() == [4]  # carried like any unknown column
    assert result.rejects.column_names == [
        "prompt",
        "input_reject_row",  # the old reject columns are kept, renamed, in the new rejects file
        "input_reject_reason",
        "reject_row",
        "reject_reason",
    ]
    assert result.rejects["input_reject_row"].to_pylist() == [9]
    assert result.rejects["reject_row"].to_pylist() == [1]  # its row in *this* file
    assert any("'reject_reason' is kept as 'input_reject_reason'" in n for n in result.notices)


def test_tiny_sample_is_what_its_generator_writes():
    import runpy

    root = Path(__file__).resolve().parents[2] / "datasets" / "samples"
    built = runpy.run_path(str(root / "make_tiny.py"))["build"]()
    assert pq.read_table(root / "tiny.parquet").equals(built)
    assert read_requests(root / "tiny.parquet").table.num_rows == built.num_rows
