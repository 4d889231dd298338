"""Prompt/output-length pairs from ShareGPT-format JSON, following vLLM's benchmark convention.

A ShareGPT file is a JSON list of ``{"id": ..., "conversations": [{"from": ..., "value": ...}]}``
(ShareGPT_Vicuna_unfiltered, Python-Code-23k-ShareGPT and the synthetic files of
``generate.py`` all have this shape). Per conversation, as in vLLM's ``benchmark_serving``:

    prompt        = the first human turn (leading non-human turns are skipped)
    output_tokens = tokens(the first reply after it)   -> output_tokens_hint and max_new_tokens
    keep iff  prompt_tokens >= 4  and  output_tokens >= 4
          and prompt_tokens <= 1024  and  prompt_tokens + output_tokens <= 2048

Entries are shuffled with a seeded generator before filtering, and the first ``n`` kept ones are
returned, so a given (file, seed, n) always yields the same rows. Nothing is dropped silently:
every skipped entry is counted under its reason in ``SharegptPairs.skipped``.

    pairs = read_sharegpt("ShareGPT_V3_unfiltered_cleaned_split.json", counter, n=200, seed=0)
    pairs.skipped  # {"no_reply": 12, "prompt_too_long": 40, ...}
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from batch_runner.errors import InputError
from batch_runner.workloads.tokens import TokenCounter

HUMAN_ROLES = frozenset({"human", "user"})


@dataclass(frozen=True)
class LengthFilter:
    min_prompt_tokens: int = 4
    min_output_tokens: int = 4
    max_prompt_tokens: int = 1024
    max_total_tokens: int = 2048


@dataclass(frozen=True)
class Pair:
    source_id: str  # the conversation's "id" (or its index when it has none)
    prompt: str
    reply: str
    prompt_tokens: int
    output_tokens: int


@dataclass
class SharegptPairs:
    pairs: list[Pair]
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    entries: int = 0  # conversations examined (a shuffled prefix of the file when n is small)
    tokenizer: str = ""


def first_exchange(conversation: list) -> tuple[str, str] | str:
    """(first human turn, the reply after it), or the reason the conversation has none."""
    turns = [t for t in conversation if isinstance(t, dict)]
    start = next((i for i, t in enumerate(turns) if t.get("from") in HUMAN_ROLES), None)
    if start is None:
        return "no_human_turn"
    prompt = turns[start].get("value")
    if not isinstance(prompt, str) or not prompt.strip():
        return "empty_prompt"
    if start + 1 >= len(turns):
        return "no_reply"
    reply = turns[start + 1].get("value")
    if turns[start + 1].get("from") in HUMAN_ROLES:
        return "no_reply"
    if not isinstance(reply, str) or not reply.strip():
        return "empty_reply"
    return prompt, reply


def load_sharegpt_json(path: str | os.PathLike) -> list:
    """The JSON list in ``path``; an ``InputError`` naming the file when it is not one."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read ShareGPT JSON ({e})") from e
    if not isinstance(data, list):
        raise InputError(
            f"{path}: expected a JSON list of conversations, got {type(data).__name__}"
        )
    return data


def select_pairs(
    entries: list,
    counter: TokenCounter,
    *,
    n: int | None = None,
    seed: int = 0,
    limits: LengthFilter = LengthFilter(),
) -> SharegptPairs:
    """Shuffle ``entries`` with ``seed`` and keep the first ``n`` that pass ``limits``."""
    out = SharegptPairs(pairs=[], tokenizer=counter.name)
    order = np.random.default_rng(seed).permutation(len(entries))
    for index in order:
        if n is not None and len(out.pairs) >= n:
            break
        out.entries += 1
        entry = entries[int(index)]
        conversation = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(conversation, list):
            out.skipped["no_conversations"] += 1
            continue
        exchange = first_exchange(conversation)
        if isinstance(exchange, str):
            out.skipped[exchange] += 1
            continue
        prompt, reply = exchange
        prompt_tokens, output_tokens = counter.count(prompt), counter.count(reply)
        reason = _length_reason(prompt_tokens, output_tokens, limits)
        if reason:
            out.skipped[reason] += 1
            continue
        source_id = str(entry.get("id", int(index)))
        out.pairs.append(Pair(source_id, prompt, reply, prompt_tokens, output_tokens))
    return out


def read_sharegpt(
    path: str | os.PathLike,
    counter: TokenCounter,
    *,
    n: int | None = None,
    seed: int = 0,
    limits: LengthFilter = LengthFilter(),
) -> SharegptPairs:
    """``select_pairs`` over the conversations of a ShareGPT JSON file."""
    return select_pairs(load_sharegpt_json(path), counter, n=n, seed=seed, limits=limits)


def _length_reason(prompt_tokens: int, output_tokens: int, limits: LengthFilter) -> str | None:
    if prompt_tokens < limits.min_prompt_tokens:
        return "prompt_too_short"
    if output_tokens < limits.min_output_tokens:
        return "output_too_short"
    if prompt_tokens > limits.max_prompt_tokens:
        return "prompt_too_long"
    if prompt_tokens + output_tokens > limits.max_total_tokens:
        return "total_too_long"
    return None
