"""The request contract end to end: the issue's five crashing files, every range at and beyond its
bounds, the chat rules, clashing column names, presets, and README agreeing with the contract.

Both commands run in-process (click's CliRunner); the job runs FCFS on the sim engine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batch_runner import cli
from batch_runner.errors import ConfigError, InputError
from batch_runner.presets import TaskPreset
from batch_runner.request_contract import CHAT_ROLES, MESSAGES_TYPE, RANGES
from batch_runner.request_summary import summarize_requests
from batch_runner.requests import read_requests
from batch_runner.results import OUTPUT_COLUMNS

README = Path(__file__).resolve().parents[2] / "README.md"


def write(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def validate(path: Path, *args: str):
    return CliRunner().invoke(cli.main, ["validate", str(path), *args])


def batch(path: Path, out: Path, *args: str, quiet: bool = True):
    argv = [str(path), "--out", str(out), "--engine", "sim", "--policy", "fcfs", *args]
    return CliRunner().invoke(cli.batch_main, argv + ["-q"] * quiet)


def no_traceback(result) -> None:
    assert result.exit_code != 1, repr(result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


# --- the five files of the issue: sajax validate accepted them, sajax-batch crashed ----------

FOUR = {"id": ["a", "b", "c", "d"], "prompt": ["hi"] * 4, "slo_e2e_ms": [1e4] * 4}
ISSUE_FILES = {  # name -> (columns, column, quoted value, ids of the bad rows)
    "max_new_tokens 2**62": (
        {"max_new_tokens": pa.array([2**62] * 4, pa.int64())},
        "max_new_tokens",
        "4611686018427387904",
        ["a", "b", "c", "d"],
    ),
    "max_new_tokens 2**63 - 1": (
        {"max_new_tokens": pa.array([2**63 - 1] * 4, pa.int64())},
        "max_new_tokens",
        "9223372036854775807",
        ["a", "b", "c", "d"],
    ),
    "weight 1e300 in every row": (
        {"weight": [1e300] * 4},
        "weight",
        "1e+300",
        ["a", "b", "c", "d"],
    ),
    "weight 1e300 in one row of four": (
        {"weight": [1.0, 1.0, 1e300, 1.0]},
        "weight",
        "1e+300",
        ["c"],
    ),
    "weight 1.7e308": ({"weight": [1.7e308] * 4}, "weight", "1.7e+308", ["a", "b", "c", "d"]),
}


@pytest.mark.parametrize("name", list(ISSUE_FILES))
def test_the_issues_files_are_refused_by_both_commands_naming_column_value_and_ids(tmp_path, name):
    columns, column, value, bad = ISSUE_FILES[name]
    path = write(tmp_path / "in.parquet", {**FOUR, **columns})
    for result in (validate(path), batch(path, tmp_path / "out.parquet")):
        no_traceback(result)
        assert result.exit_code == 2, result.output
        message = " ".join(result.output.split())  # click wraps nothing, but be safe
        assert column in message and value in message, message
        assert f"{len(bad)} of 4 rows are invalid" in message
        for rid in bad:
            assert re.search(rf"\b{rid}\b", message)
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("name", list(ISSUE_FILES))
def test_the_issues_files_under_skip_run_the_good_rows_and_set_the_bad_ones_aside(tmp_path, name):
    columns, column, value, bad = ISSUE_FILES[name]
    path = write(tmp_path / "in.parquet", {**FOUR, **columns})
    out = tmp_path / "results.parquet"
    checked = validate(path, "--on-bad-rows", "skip")
    ran = batch(path, out, "--on-bad-rows", "skip", "--summary-json", str(tmp_path / "s.json"))
    for result in (checked, ran):
        no_traceback(result)
    if len(bad) == 4:  # nothing left to run: both refuse, the rejects file says why
        assert checked.exit_code == ran.exit_code == 2
        assert "all 4 rows are invalid" in ran.output
    else:
        assert checked.exit_code == ran.exit_code == 0, ran.output
        assert pq.read_table(out)["id"].to_pylist() == [i for i in FOUR["id"] if i not in bad]
        assert (tmp_path / "s.json").exists()
    rejects = pq.read_table(tmp_path / "results.rejects.parquet")
    assert rejects["id"].to_pylist() == bad
    for reason in rejects["reject_reason"].to_pylist():
        assert reason.startswith(f"{column} is larger than") and reason.endswith(value)


# --- ranges: the bounds are in, one step beyond is out --------------------------------------


def _beyond(name: str) -> list:
    r = RANGES[name]
    if isinstance(r.low, int):
        return [r.low - 1, r.high + 1]
    return [r.low / 2 if r.low > 0 else -1e-9, r.high * 1.0001]


@pytest.mark.parametrize("name", list(RANGES))
def test_each_range_takes_its_bounds_and_refuses_a_step_beyond(tmp_path, name):
    r = RANGES[name]
    typ = pa.int64() if isinstance(r.low, int) else pa.float64()
    ok = write(
        tmp_path / "ok.parquet", {"prompt": ["x", "y"], name: pa.array([r.low, r.high], typ)}
    )
    assert read_requests(ok).table[name].to_pylist() == [r.low, r.high]
    bad = write(
        tmp_path / "bad.parquet",
        {
            "id": ["lo", "hi", "in"],
            "prompt": ["x"] * 3,
            name: pa.array([*_beyond(name), r.high], typ),
        },
    )
    with pytest.raises(InputError) as info:
        read_requests(bad)
    message = info.value.format_message()
    assert f"{name} {r.below()} in 1 row (id: lo)" in message
    assert f"{name} {r.above()} in 1 row (id: hi)" in message
    assert info.value.row_count == 2


def test_unsigned_and_small_integer_types_are_checked_before_any_cast(tmp_path):
    path = write(
        tmp_path / "u.parquet",
        {
            "prompt": ["x", "y", "z"],
            "max_new_tokens": pa.array([2**64 - 1, 2**20, 5], pa.uint64()),
            "output_tokens_hint": pa.array([-1, 0, 100], pa.int8()),
        },
    )
    result = read_requests(path, on_bad_rows="skip")
    assert result.table["max_new_tokens"].to_pylist() == [2**20, 5]
    assert result.rejects["reject_reason"].to_pylist() == [
        "max_new_tokens is larger than 1048576: 18446744073709551615; "
        "output_tokens_hint is negative: -1"
    ]


def test_validates_token_total_is_exact_and_never_wraps(tmp_path):
    path = write(tmp_path / "t.parquet", {"prompt": ["x"] * 4, "max_new_tokens": [2**20] * 4})
    assert summarize_requests(read_requests(path).table)["total"]["max_new_tokens"] == 2**22
    table = read_requests(path).table
    huge = table.set_column(
        table.schema.get_field_index("max_new_tokens"),
        "max_new_tokens",
        pa.array([2**63 - 1] * 4, pa.int64()),
    )  # not a valid table, but the summary of any table must not wrap (it printed -4)
    assert summarize_requests(huge)["total"]["max_new_tokens"] == 4 * (2**63 - 1)


def test_a_preset_outside_the_ranges_is_a_config_error(tmp_path):
    path = write(tmp_path / "p.parquet", {"prompt": ["x"], "task": ["chat"]})
    with pytest.raises(ConfigError, match=r"task 'chat': max_new_tokens = 4611686018427387904"):
        read_requests(path, slo_config={"chat": TaskPreset(max_new_tokens=2**62)})
    with pytest.raises(ConfigError, match=r"slo_e2e_ms = 1e\+300 is larger than 1e\+10 ms"):
        read_requests(path, slo_config={"chat": TaskPreset(slo_e2e_ms=1e300)})


# --- chats -----------------------------------------------------------------------------------


def chat(*roles: str | None) -> list[dict]:
    return [{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)]


CHAT_PROBLEMS = {  # name -> (messages, words of the reason)
    "unknown role": (chat("user", "wizard", "user"), "role other than system, user, assistant"),
    "capitalised role": (chat("User"), "role other than"),
    "ends with the assistant": (chat("user", "assistant"), "ends with a message that is not"),
    "only a system message": (chat("system"), "has no user message"),
    "system message later": (chat("user", "system", "user"), "system message after the first"),
    "no user message": (chat("assistant", "tool"), "has no user message"),
}


@pytest.mark.parametrize("name", list(CHAT_PROBLEMS))
def test_each_chat_that_breaks_the_rules_is_a_row_error(tmp_path, name):
    messages, words = CHAT_PROBLEMS[name]
    path = write(
        tmp_path / "c.parquet",
        {"id": ["bad", "good"], "messages": pa.array([messages, chat("user")], MESSAGES_TYPE)},
    )
    with pytest.raises(InputError, match="messages") as info:
        read_requests(path)
    assert words in info.value.format_message() and "(id: bad)" in info.value.format_message()
    result = read_requests(path, on_bad_rows="skip")
    assert result.table["id"].to_pylist() == ["good"]
    assert words in result.rejects["reject_reason"][0].as_py()


def test_the_offending_role_is_quoted(tmp_path):
    path = write(tmp_path / "r.parquet", {"messages": pa.array([chat("user", "wizard", "user")])})
    reason = read_requests(path, on_bad_rows="skip").rejects["reject_reason"][0].as_py()
    assert reason == f"messages has a role other than {', '.join(CHAT_ROLES)}: wizard"


def test_a_row_with_both_prompt_and_messages_is_refused_by_both_commands(tmp_path):
    path = write(
        tmp_path / "both.parquet",
        {
            "id": ["both", "prompt", "chat"],
            "prompt": ["say bye", "hi", None],
            "messages": pa.array([chat("user"), None, chat("user")], MESSAGES_TYPE),
        },
    )
    for result in (validate(path), batch(path, tmp_path / "out.parquet")):
        no_traceback(result)
        assert result.exit_code == 2
        assert "messages is set together with prompt" in result.output
        assert "(id: both)" in result.output


# --- clashing column names: kept, renamed, said --------------------------------------------


def test_columns_named_like_output_columns_are_kept_renamed_and_said(tmp_path):
    n = 3
    user = {name: [f"{name}-{i}" for i in range(n)] for name in OUTPUT_COLUMNS.names}
    user["input_error"] = ["taken-0", "taken-1", "taken-2"]  # input_error is taken: error moves on
    user["reject_reason"] = ["old-0", "old-1", "old-2"]
    path = write(tmp_path / "in.parquet", {"id": ["a", "b", "c"], "prompt": ["x", "", "z"], **user})
    out = tmp_path / "results.parquet"

    checked = validate(path, "--on-bad-rows", "skip")
    ran = batch(path, out, "--on-bad-rows", "skip", quiet=False)
    for result in (checked, ran):
        no_traceback(result)
        assert result.exit_code == 0, result.output
        assert "input column 'rank' is kept as 'input_rank' in the results" in result.output
        assert "input column 'error' is kept as 'input_input_error'" in result.output
        assert (
            "'reject_reason' is kept as 'input_reject_reason' in the rejects file" in result.output
        )

    as_json = json.loads(validate(path, "--on-bad-rows", "skip", "--json").output)
    assert as_json["renamed"]["error"] == "input_input_error"
    assert as_json["renamed"]["rank"] == "input_rank"

    results = pq.read_table(out)
    for name in OUTPUT_COLUMNS.names:
        kept = "input_input_error" if name == "error" else f"input_{name}"
        assert results[kept].to_pylist() == [f"{name}-0", f"{name}-2"], name
        assert results.schema.field(name).type == OUTPUT_COLUMNS.field(name).type  # the job's
    assert results["input_error"].to_pylist() == ["taken-0", "taken-2"]
    assert results["reject_reason"].to_pylist() == ["old-0", "old-2"]  # no clash in the results
    rejects = pq.read_table(tmp_path / "results.rejects.parquet")
    assert rejects["error"].to_pylist() == ["error-1"]  # no clash in the rejects file
    assert rejects["input_reject_reason"].to_pylist() == ["old-1"]
    assert rejects["reject_reason"].to_pylist() == ["prompt is an empty string"]


# --- README and the contract agree -----------------------------------------------------------


def test_readme_states_the_contracts_ranges_and_roles():
    text = README.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    for name, r in RANGES.items():
        row = next(line for line in rows if f"`{name}`" in line.split("|")[1])
        low, high = re.search(r"(\S+) to (\S+)", row.split("|")[2]).groups()
        assert (float(low), float(high.rstrip(","))) == (r.low, r.high), row
    for role in CHAT_ROLES:
        assert f"`{role}`" in text
    assert "`results.rejects.parquet`" in text
