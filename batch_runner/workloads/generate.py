"""Synthetic ShareGPT-format conversations with published length statistics (no copied text).

For runs without the real data sets. Each task kind draws (prompt tokens, reply tokens) from a
length model and writes text of about that many tokens, built from a fixed word list (for
``code``: Python-looking lines), so the output is valid ShareGPT JSON that ``sharegpt.py`` reads
like the real thing. Length models (GPU scale = the published statistics):

    chat (ShareGPT, vLLM filter):  in ~ LogNormal(mean 180, sigma 1.0), out ~ LogNormal(mean 370,
                                   sigma 0.9), truncated by the filter to means 161 and 338
                                   (medians 107 and 243; heavy right tail up to the 2048 cap)
    code (Python-Code-23k):        in ~ LogNormal(mean 40, sigma 0.5), out ~ Uniform[200, 500]
    classification:                in ~ LogNormal(mean 120, sigma 0.6), out ~ Uniform[4, 8]

where LogNormal(mean m, sigma s) has mu = ln(m) - s^2 / 2. The CPU scale divides these so that a
~200-request mix runs in a few minutes on 2 cores (SmolLM2-135M): chat in mean 80 / out mean 85,
code in mean 30 / out Uniform[50, 125], classification in mean 60 / out Uniform[4, 8]. Draws
outside the scale's limits are redrawn (rejection), so the length filter keeps every entry.

    conversations = synthetic_conversations("chat", n=100, scale="gpu", counter=counter, seed=0)
    write_sharegpt_json(conversations, "datasets/samples/sharegpt_synthetic.json")
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batch_runner.workloads.sharegpt import LengthFilter
from batch_runner.workloads.tokens import TokenCounter, approximate_count

TASKS = ("code", "chat", "classification")
SCALES = ("cpu", "gpu")


@dataclass(frozen=True)
class LengthModel:
    """Token lengths of one task kind at one scale (see the module docstring)."""

    input_mean: float  # LogNormal mean of prompt tokens
    input_sigma: float  # LogNormal sigma of prompt tokens
    output_mean: float = 0.0  # LogNormal mean of reply tokens (used when output_range is None)
    output_sigma: float = 0.0
    output_range: tuple[int, int] | None = None  # Uniform[lo, hi] reply tokens instead
    limits: LengthFilter = LengthFilter()

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(prompt tokens, reply tokens), each (n,) int64, all within ``limits``."""
        inputs = np.empty(n, np.int64)
        outputs = np.empty(n, np.int64)
        filled = 0
        while filled < n:
            k = 2 * (n - filled) + 8
            x = _lognormal(rng, self.input_mean, self.input_sigma, k)
            if self.output_range is None:
                y = _lognormal(rng, self.output_mean, self.output_sigma, k)
            else:
                y = rng.integers(self.output_range[0], self.output_range[1] + 1, k)
            lim = self.limits
            ok = (
                (x >= lim.min_prompt_tokens)
                & (y >= lim.min_output_tokens)
                & (x <= lim.max_prompt_tokens)
                & (x + y <= lim.max_total_tokens)
            )
            take = min(int(ok.sum()), n - filled)
            inputs[filled : filled + take] = x[ok][:take]
            outputs[filled : filled + take] = y[ok][:take]
            filled += take
        return inputs, outputs


CPU_LIMITS = LengthFilter(max_prompt_tokens=256, max_total_tokens=384)

LENGTH_MODELS: dict[str, dict[str, LengthModel]] = {
    "gpu": {
        "chat": LengthModel(180.0, 1.0, output_mean=370.0, output_sigma=0.9),
        "code": LengthModel(40.0, 0.5, output_range=(200, 500)),
        "classification": LengthModel(120.0, 0.6, output_range=(4, 8)),
    },
    "cpu": {
        "chat": LengthModel(80.0, 0.8, output_mean=85.0, output_sigma=0.6, limits=CPU_LIMITS),
        "code": LengthModel(30.0, 0.4, output_range=(50, 125), limits=CPU_LIMITS),
        "classification": LengthModel(60.0, 0.5, output_range=(4, 8), limits=CPU_LIMITS),
    },
}

# Plain lowercase words: each is one token (with its leading space) in common BPE vocabularies,
# so the text's token count tracks the drawn length closely.
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so what no "
    "out up into who them some could time only new about than other then do may any these two "
    "more its first like over such our man me even most made after also did many before must "
    "through years where much your way well down should because each just those people how too "
    "little state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come since "
    "against go came right used take three small house water light city plan river road music "
    "story market paper table garden window letter number system program question point group"
).split()
LABELS = ("positive", "negative", "neutral")
CODE_NAMES = (
    "value items total count index result data name size left right node key path line text "
    "buffer parts score limit offset start end step queue stack"
).split()
_CODE_TEMPLATES = (
    "    {a} = {b} + {c}\n",
    "    for {a} in range(len({b})):\n",
    "        {a}.append({b}[{c}])\n",
    "    if {a} > {b}:\n",
    "        return {a}\n",
    "    {a} = [{b} for {b} in {c} if {b}]\n",
    "def {a}_{b}({c}):\n",
    "    # update the {a} of each {b}\n",
)


def synthetic_conversations(
    task: str,
    n: int,
    *,
    scale: str = "gpu",
    counter: TokenCounter,
    seed: int = 0,
    id_prefix: str | None = None,
) -> list[dict]:
    """``n`` ShareGPT-format entries of ``task`` kind, lengths from ``LENGTH_MODELS[scale][task]``.

    The ``counter`` sizes the text: each entry's prompt and reply have about (within a few
    tokens) the drawn number of tokens under that tokenizer.
    """
    model = LENGTH_MODELS[_check(scale, SCALES, "scale")][_check(task, TASKS, "task")]
    rng = np.random.default_rng([seed, TASKS.index(task), SCALES.index(scale)])
    inputs, outputs = model.sample(rng, n)
    costs = _word_costs(counter)
    prefix = id_prefix or f"synthetic-{task}"
    entries = []
    for i, (x, y) in enumerate(zip(inputs, outputs, strict=True)):
        prompt, reply = _texts(task, int(x), int(y), rng, counter, costs)
        entries.append(
            {
                "id": f"{prefix}-{i:05d}",
                "conversations": [
                    {"from": "human", "value": prompt},
                    {"from": "gpt", "value": reply},
                ],
            }
        )
    return entries


def write_sharegpt_json(entries: list[dict], path: str | os.PathLike) -> Path:
    """Write ShareGPT-format ``entries`` as an indented JSON list (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _texts(task, prompt_tokens, reply_tokens, rng, counter, costs):
    if task == "code":
        head = "Write a Python function that"
        prompt = _fill(head, prompt_tokens, rng, counter, costs) + "."
        reply = _code(reply_tokens, rng, counter)
    elif task == "classification":
        head = "Classify the sentiment of this review as positive, negative or neutral. Review:"
        prompt = _fill(head, prompt_tokens, rng, counter, costs)
        label = LABELS[int(rng.integers(len(LABELS)))]
        reply = _fill(label.capitalize(), reply_tokens, rng, counter, costs)
    else:
        prompt = _fill("Tell me about", prompt_tokens, rng, counter, costs) + "?"
        reply = _fill("Sure.", reply_tokens, rng, counter, costs)
    return prompt, reply


def _fill(head: str, target: int, rng, counter: TokenCounter, costs: np.ndarray) -> str:
    """``head`` followed by words until the text has about ``target`` tokens."""
    words = [head]
    total = counter.count(head)
    cheapest = int(costs.min())
    while total < target:
        j = int(rng.integers(len(WORDS)))
        if total + costs[j] > target and costs[j] > cheapest:
            continue  # overshoots: draw again (a cheapest word always fits or ends the loop)
        words.append(WORDS[j])
        total += int(costs[j])
        if rng.random() < 0.08 and total < target - 1:
            words[-1] += ","
            total += 1
    return " ".join(words)


def _code(target: int, rng, counter: TokenCounter) -> str:
    """A fenced block of Python-looking lines with about ``target`` tokens (never more)."""
    fence, close = "```python\n", "```"
    body = ""
    exact = counter.count(fence + close)  # tokens of the text built so far
    pending = 0.0  # estimated tokens added since ``exact`` was counted
    while True:
        template = _CODE_TEMPLATES[int(rng.integers(len(_CODE_TEMPLATES)))]
        names = rng.choice(len(CODE_NAMES), size=3, replace=False)
        line = template.format(**{k: CODE_NAMES[int(i)] for k, i in zip("abc", names, strict=True)})
        cost = 1.25 * approximate_count(line)  # cheap, and high enough to be safe
        if exact + pending + cost <= target - 16:  # far from the target: no need to recount
            body += line
            pending += cost
            continue
        # Near the target, count the whole text: tokens merge across line boundaries.
        pending = 0.0
        candidate = counter.count(fence + body + line + close)
        if candidate <= target:
            body, exact = body + line, candidate
            continue
        # Pad with short lines while they fit; each must add a token, so this terminates.
        exact = counter.count(fence + body + close)
        while True:
            padded = counter.count(fence + body + "    pass\n" + close)
            if padded > target or padded <= exact:
                return fence + body + close
            body, exact = body + "    pass\n", padded


def _word_costs(counter: TokenCounter) -> np.ndarray:
    return np.array([max(1, counter.count(" " + w)) for w in WORDS], np.int64)


def _lognormal(rng: np.random.Generator, mean: float, sigma: float, n: int) -> np.ndarray:
    mu = math.log(mean) - sigma**2 / 2
    return np.rint(rng.lognormal(mu, sigma, n)).astype(np.int64)


def _check(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


def filler_text(words: int, rng: np.random.Generator) -> str:
    """``words`` random words of ``WORDS`` (about one token each): prompts for timing sweeps."""
    return " ".join(WORDS[int(i)] for i in rng.integers(len(WORDS), size=max(1, words)))
