"""Write datasets/samples/tiny.parquet: 12 hand-made requests that exercise the request contract.

It has every optional column, prompts and chat messages, rows that set their own SLOs and rows
that leave them to the presets (``--slo-config datasets/slo_presets.toml``), a task without a
preset (best-effort), and two columns sajax does not know (carried through to the results).
Run from the repository root::

    .venv/bin/python datasets/samples/make_tiny.py
    .venv/bin/sajax validate datasets/samples/tiny.parquet --slo-config datasets/slo_presets.toml
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def _chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


ROWS = [
    # id, task, prompt, messages, max_new_tokens, slo_e2e, slo_ttft, slo_tpot, hint, source
    ("code-1", "code", "def fibonacci(n):\n    ", None, 48, None, None, None, 40, "handmade"),
    (
        "code-2",
        "code",
        "# Sort a list of dicts by key 'age'\n",
        None,
        None,
        20000.0,
        None,
        None,
        None,
        "handmade",
    ),
    (
        "code-3",
        "code",
        "class Stack:\n    def push(self, x):\n",
        None,
        None,
        None,
        None,
        None,
        60,
        "handmade",
    ),
    (
        "chat-1",
        "chat",
        None,
        _chat(("user", "What is the capital of France?")),
        None,
        None,
        None,
        None,
        12,
        "handmade",
    ),
    (
        "chat-2",
        "chat",
        None,
        _chat(("system", "Answer briefly."), ("user", "Name three prime numbers.")),
        32,
        None,
        5000.0,
        80.0,
        None,
        "handmade",
    ),
    (
        "chat-3",
        "chat",
        "Tell me a short fact about the Moon.",
        None,
        None,
        None,
        None,
        None,
        None,
        "handmade",
    ),
    (
        "cls-1",
        "classification",
        "Sentiment (positive/negative): 'I loved this film.'\nAnswer:",
        None,
        None,
        None,
        None,
        None,
        1,
        "handmade",
    ),
    (
        "cls-2",
        "classification",
        "Topic (sports/politics/tech): 'The new GPU doubles memory bandwidth.'\nAnswer:",
        None,
        None,
        8000.0,
        None,
        None,
        1,
        "handmade",
    ),
    (
        "cls-3",
        "classification",
        "Is this spam? 'You won a prize, click here!'\nAnswer:",
        None,
        4,
        None,
        None,
        None,
        None,
        "handmade",
    ),
    (
        "misc-1",
        "summarize",
        "Summarize in one sentence: The quick brown fox jumps over the lazy dog.",
        None,
        24,
        None,
        None,
        None,
        None,
        "handmade",
    ),
    ("misc-2", None, "Say hello.", None, 8, 30000.0, None, None, None, "handmade"),
    (
        "misc-3",
        None,
        None,
        _chat(("user", "Count from 1 to 5.")),
        16,
        None,
        None,
        None,
        None,
        "handmade",
    ),
]


def build() -> pa.Table:
    cols = list(zip(*ROWS, strict=True))
    t0 = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    return pa.table(
        {
            "id": pa.array(cols[0], pa.string()),
            "task": pa.array(cols[1], pa.string()),
            "prompt": pa.array(cols[2], pa.string()),
            "messages": pa.array(cols[3], MESSAGES),
            "max_new_tokens": pa.array(cols[4], pa.int64()),
            "slo_e2e_ms": pa.array(cols[5], pa.float64()),
            "slo_ttft_ms": pa.array(cols[6], pa.float64()),
            "slo_tpot_ms": pa.array(cols[7], pa.float64()),
            "output_tokens_hint": pa.array(cols[8], pa.int64()),
            "weight": pa.array(
                [2.0 if i.startswith("cls") else None for i in cols[0]], pa.float64()
            ),
            "ignore_eos": pa.array([None] * len(ROWS), pa.bool_()),
            # not part of the contract: carried through to the results unchanged
            "source": pa.array(cols[9], pa.string()).dictionary_encode(),
            "created_at": pa.array(
                [t0 + dt.timedelta(minutes=i) for i in range(len(ROWS))], pa.timestamp("ms", "UTC")
            ),
        }
    )


if __name__ == "__main__":
    out = Path(__file__).with_name("tiny.parquet")
    pq.write_table(build(), out)
    print(f"wrote {out} ({len(ROWS)} rows)")
