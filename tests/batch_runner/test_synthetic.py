"""paper_mix: shapes, task statistics, SLO columns, determinism, tightness."""

import numpy as np

from batch_runner.workloads.synthetic import TASKS, paper_mix
from sajax.heuristics import alone_time
from sajax.problem import make_problem
from sajax.profiles import load_profile


def test_columns_and_task_statistics():
    cols = paper_mix(4000, seed=0)
    assert set(cols) == {
        "task",
        "input_len",
        "output_len",
        "slo_e2e_ms",
        "slo_ttft_ms",
        "slo_tpot_ms",
    }
    assert all(len(v) == 4000 for v in cols.values())
    assert set(cols["task"]) == set(TASKS)
    chat = cols["task"] == "chat"
    assert 130 < cols["input_len"][chat].mean() < 190  # ShareGPT-like ~161
    assert 290 < cols["output_len"][chat].mean() < 390  # ~338
    code = cols["task"] == "code"
    assert cols["output_len"][code].min() >= 200 and cols["output_len"][code].max() <= 500
    cls = cols["task"] == "classification"
    assert cols["output_len"][cls].max() <= 8
    # chat: TTFT + TPOT; others: e2e only
    assert np.all(np.isnan(cols["slo_e2e_ms"][chat])) and np.all(cols["slo_tpot_ms"][chat] > 0)
    assert np.all(np.isfinite(cols["slo_e2e_ms"][~chat])) and np.all(
        np.isnan(cols["slo_ttft_ms"][~chat])
    )


def test_slos_are_above_alone_time_and_tighten_with_tightness():
    loose, tight = paper_mix(500, seed=3, tightness=0.5), paper_mix(500, seed=3, tightness=4.0)
    np.testing.assert_array_equal(loose["input_len"], tight["input_len"])
    model = load_profile("gpu-7b-a100")
    alone = alone_time(make_problem(loose["input_len"], loose["output_len"], size=500), model)
    e2e = np.asarray(alone.e2e_ms)
    has = np.isfinite(loose["slo_e2e_ms"])
    assert np.all(loose["slo_e2e_ms"][has] > e2e[has])
    assert np.all(tight["slo_e2e_ms"][has] < loose["slo_e2e_ms"][has])


def test_deterministic():
    a, b = paper_mix(100, seed=7), paper_mix(100, seed=7)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_real_chat_lengths_replace_the_drawn_ones_and_the_rest_stays(tmp_path):
    import json

    import pytest

    from batch_runner.workloads.synthetic import sharegpt_chat_lengths
    from batch_runner.workloads.tokens import TokenCounter

    words = TokenCounter("test:words", lambda text: len(text.split()))
    entries = [
        {
            "id": f"c{i}",
            "conversations": [
                {"from": "human", "value": " ".join(["q"] * (5 + i))},
                {"from": "gpt", "value": " ".join(["a"] * (10 + 2 * i))},
            ],
        }
        for i in range(300)
    ]
    path = tmp_path / "chats.json"
    path.write_text(json.dumps(entries))
    inp, out = sharegpt_chat_lengths(200, seed=1, source=str(path), counter=words)
    assert len(inp) == 200 and np.all(out == 10 + 2 * (inp - 5))  # each pair kept together
    synthetic = paper_mix(200, seed=3)
    real = paper_mix(200, seed=3, chat_lengths=(inp, out))
    chat = real["task"] == "chat"
    k = int(chat.sum())
    assert np.array_equal(real["input_len"][chat], inp[:k])
    assert np.array_equal(real["output_len"][chat], out[:k])
    assert np.array_equal(real["task"], synthetic["task"])
    assert np.array_equal(real["output_len"][~chat], synthetic["output_len"][~chat])
    with pytest.raises(ValueError, match="chat_lengths has 5 pairs"):
        paper_mix(200, seed=3, chat_lengths=(inp[:5], out[:5]))
