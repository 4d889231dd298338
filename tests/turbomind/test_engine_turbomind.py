"""The executor-side behaviour of TurbomindEngine, with lmdeploy's REAL AsyncEngine on top of a
fake TurboMind core (fake_turbomind.py): only the compiled engine is replaced.

Real: our engine, its loop thread, lmdeploy's AsyncEngine (constructor, chat template, tokenizer,
preprocess, generate, session manager, request-handle pool, detokeniser, GenOut, finish-reason and
error mapping), GenerationConfig normalisation. Fake: TurboMind's C++ scheduler and kernels, which
here emit deterministic token ids, several per step, after a short sleep per step.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from batch_runner.engines.base import (
    Engine,
    EngineError,
    EngineRequest,
    Failed,
    Finished,
    FirstToken,
)
from batch_runner.engines.turbomind import (
    TurbomindEngine,
    TurbomindSettings,
    build_async_engine,
)
from tests.turbomind.tiny_model import WORDS, word_id

pytest.importorskip("lmdeploy")
pytestmark = pytest.mark.turbomind

from tests.turbomind.fake_turbomind import FakeTurboMind  # noqa: E402  (needs lmdeploy)


@pytest.fixture
def make_engine(tiny_model_dir, monkeypatch):
    """Start a TurbomindEngine whose AsyncEngine is real and whose TurboMind core is fake."""
    from lmdeploy.serve.core import AsyncEngine

    started = []

    def make(core_kw=None, **settings_kw):
        cores = []

        def fake_build_turbomind(self, model_path, backend_config=None, **kwargs):
            core = FakeTurboMind(backend_config, vocab_size=3 + len(WORDS), **(core_kw or {}))
            cores.append(core)
            return core

        monkeypatch.setattr(AsyncEngine, "_build_turbomind", fake_build_turbomind)
        settings = TurbomindSettings(model=tiny_model_dir, **settings_kw)
        engine = TurbomindEngine(settings, build=build_async_engine, runtime_check=lambda: [])
        engine.start()
        started.append(engine)
        return engine, cores[0]

    yield make
    for engine in started:
        engine.stop()


def run_all(engine, requests, timeout=20.0):
    """Submit in order, poll until every request has a terminal event; events per id."""
    events = {r.id: [] for r in requests}
    for r in requests:
        engine.submit(r)
    deadline = time.monotonic() + timeout
    open_ids = set(events)
    while open_ids:
        assert time.monotonic() < deadline, f"no terminal event for {sorted(open_ids)}"
        for event in engine.poll(timeout=0.05):
            events[event.id].append(event)
            if isinstance(event, Finished | Failed):
                open_ids.discard(event.id)
    return events


def terminal(events):
    return events[-1]


def test_it_is_an_engine(make_engine):
    engine, _ = make_engine(max_batch_size=2)
    assert isinstance(engine, Engine) and engine.name == "turbomind"


def test_submission_order_is_turbomind_arrival_order(make_engine):
    """Later requests preprocess faster here, and only 2 request handles exist, so a design that
    preprocesses concurrently, or a handle pool that were not FIFO, would reorder arrivals."""
    engine, core = make_engine(max_batch_size=2)
    processor = engine._async_engine.prompt_processor
    real_get_prompt_input = processor.get_prompt_input
    n = 10
    delay = {WORDS[i]: 0.002 * (n - i) for i in range(n)}

    async def slow_get_prompt_input(prompt, **kwargs):
        await asyncio.sleep(delay[prompt.split()[0]])
        return await real_get_prompt_input(prompt, **kwargs)

    processor.get_prompt_input = slow_get_prompt_input
    order = [3, 0, 7, 1, 9, 2, 8, 4, 6, 5]  # a plan order, not the natural one
    requests = [
        EngineRequest(id=f"r{i}", prompt=f"{WORDS[i]} hello", max_new_tokens=4) for i in order
    ]
    events = run_all(engine, requests)
    assert all(isinstance(terminal(e), Finished) for e in events.values())
    arrived = [a.input_ids[1] for a in core.arrivals]  # after the template's role word
    assert arrived == [word_id(WORDS[i]) for i in order]
    assert [a.session_id for a in core.arrivals] == sorted(a.session_id for a in core.arrivals)


def test_stamps_and_token_counts_across_multi_token_chunks(make_engine):
    engine, core = make_engine(max_batch_size=4, core_kw=dict(tokens_per_step=3, step_s=0.01))
    before = engine.now()
    request = EngineRequest(id="a", prompt="hello world", max_new_tokens=10, ignore_eos=True)
    events = run_all(engine, [request])["a"]
    after = engine.now()
    first, done = events
    assert isinstance(first, FirstToken) and isinstance(done, Finished)
    # 10 tokens in steps of 3 arrive in 4 chunks: the first after one step, the last 3 steps later
    assert before + 0.01 <= first.t < done.t <= after
    assert done.t - first.t >= 3 * 0.01 * 0.9
    assert done.output_tokens == 10  # counted tokens, not chunks (4)
    assert done.input_tokens == 4 == engine.count_tokens(request)  # user hello world assistant
    assert done.finish_reason == "length"
    assert done.text.split() == [WORDS[k % len(WORDS)] for k in range(10)]
    gen = core.arrivals[0].gen_config
    assert (gen.max_new_tokens, gen.ignore_eos, gen.do_sample, gen.top_k) == (10, True, False, 1)


def test_eos_gives_stop_without_counting_the_stop_token(make_engine):
    key = word_id("alpha")
    engine, _ = make_engine(max_batch_size=2, core_kw=dict(eos_after={key: 4}))
    requests = [
        EngineRequest(id="eos", prompt="alpha beta", max_new_tokens=20),
        EngineRequest(id="ignored", prompt="alpha gamma", max_new_tokens=7, ignore_eos=True),
    ]
    events = run_all(engine, requests)
    stopped, ignored = terminal(events["eos"]), terminal(events["ignored"])
    assert (stopped.finish_reason, stopped.output_tokens) == ("stop", 4)
    assert len(stopped.text.split()) == 4
    assert (ignored.finish_reason, ignored.output_tokens) == ("length", 7)


def test_failures_become_failed_events_and_the_rest_go_on(make_engine):
    bad, cancelled = word_id("gamma"), word_id("delta")
    engine, _ = make_engine(
        max_batch_size=2, session_len=16, core_kw=dict(error_on={bad}, cancel_on={cancelled})
    )
    requests = [
        EngineRequest(id="ok1", prompt="hello", max_new_tokens=3),
        EngineRequest(id="engine-error", prompt="gamma hello", max_new_tokens=3),
        EngineRequest(id="too-long", prompt=" ".join(["world"] * 20), max_new_tokens=3),
        EngineRequest(id="aborted", prompt="delta hello", max_new_tokens=3),
        EngineRequest(id="ok2", prompt="world", max_new_tokens=3),
    ]
    events = run_all(engine, requests)
    assert isinstance(terminal(events["ok1"]), Finished)
    assert isinstance(terminal(events["ok2"]), Finished)
    error = terminal(events["engine-error"])
    assert isinstance(error, Failed) and "INTERNAL_ERROR" in error.error
    too_long = terminal(events["too-long"])
    assert isinstance(too_long, Failed) and "CONTEXT_LENGTH_EXCEEDED" in too_long.error
    aborted = terminal(events["aborted"])
    assert isinstance(aborted, Failed) and "'abort'" in aborted.error
    # A failed request can be submitted again (the executor retries with the same id).
    again = run_all(engine, [EngineRequest(id="ok1", prompt="hello", max_new_tokens=2)])
    assert terminal(again["ok1"]).output_tokens == 2


def test_messages_go_through_the_models_chat_template(make_engine):
    engine, core = make_engine(max_batch_size=2)
    chat = EngineRequest(
        id="chat", messages=({"role": "user", "content": "hello world"},), max_new_tokens=2
    )
    plain = EngineRequest(id="plain", prompt="hello world", max_new_tokens=2)
    # "user hello world assistant": the template adds the role and the generation prompt
    assert engine.count_tokens(chat) == 4
    events = run_all(engine, [chat])
    assert terminal(events["chat"]).input_tokens == 4
    assert core.arrivals[0].input_ids == [word_id(w) for w in "user hello world assistant".split()]
    # A plain prompt is one user turn through the same template (as in lmdeploy.pipeline)
    assert engine.count_tokens(plain) == 4


def test_sampling_parameters_reach_the_engine(make_engine):
    from batch_runner.engines.base import SamplingParams

    engine, core = make_engine(max_batch_size=2)
    request = EngineRequest(
        id="s", prompt="hello", max_new_tokens=2, sampling=SamplingParams(0.5, 0.8, 99)
    )
    run_all(engine, [request])
    gen = core.arrivals[0].gen_config
    assert (gen.do_sample, gen.temperature, gen.top_p, gen.top_k, gen.random_seed) == (
        True,
        0.5,
        0.8,
        0,
        99,
    )


def test_stop_with_requests_in_flight_cancels_them_and_returns(make_engine):
    engine, core = make_engine(max_batch_size=2, core_kw=dict(tokens_per_step=1, step_s=0.05))
    for i in range(4):
        engine.submit(EngineRequest(id=f"r{i}", prompt="hello", max_new_tokens=1000))
    deadline = time.monotonic() + 10
    while not any(isinstance(e, FirstToken) for e in engine.poll(0.05)):
        assert time.monotonic() < deadline
    t = time.monotonic()
    engine.stop()
    assert time.monotonic() - t < 5
    assert len(core.cancelled) == 2  # the two holding request handles were cancelled in TurboMind
    assert core.closed
    with pytest.raises(EngineError, match="not started"):
        engine.submit(EngineRequest(id="late", prompt="hello"))


def test_start_twice_is_refused(make_engine):
    engine, _ = make_engine(max_batch_size=2)
    with pytest.raises(EngineError, match="already started"):
        engine.start()


def test_bad_sampling_is_refused_at_submit(make_engine):
    from batch_runner.engines.base import SamplingParams

    engine, core = make_engine(max_batch_size=2)
    with pytest.raises(ValueError, match="sampling parameters LMDeploy refuses"):
        engine.submit(EngineRequest(id="x", prompt="hi", sampling=SamplingParams(temperature=5)))
    assert core.arrivals == []


# -- A fake AsyncEngine yielding lmdeploy's real GenOut: stream shapes the real one never makes --


class ScriptedAsyncEngine:
    """The AsyncEngine surface TurbomindEngine uses; ``generate`` plays a scripted GenOut list."""

    backend = "turbomind"

    def __init__(self, backend_config, script):
        self.backend_config = backend_config
        self.script = script  # prompt -> list of GenOut, or an exception to raise after them
        self.closed = False

    def start_loop(self, loop, use_async_api=False):
        return True

    async def preprocess(self, messages, session_id, gen_config):
        return messages

    async def generate(self, request, stream_response=True):
        for item in self.script[request]:
            await asyncio.sleep(0.001)
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self):
        self.closed = True


def test_scripted_streams_map_to_events(tiny_model_dir):
    from lmdeploy.serve.core.async_engine import GenOut

    script = {
        # two chunks of 2 and 3 tokens; the final chunk carries the reason and no new text
        "multi": [GenOut("a b", 7, 2), GenOut(" c d e", 7, 5), GenOut("", 7, 5, "length")],
        # EOS as the first token: no generated token, so no FirstToken (executor uses finish)
        "empty": [GenOut("", 7, 0, "stop")],
        "no-reason": [GenOut("a", 7, 1)],
        "dies": [GenOut("a", 7, 1), RuntimeError("CUDA error: an illegal memory access")],
        "error": [GenOut("", 7, 0, "error")],
    }
    holder = {}

    def build(settings, config):
        holder["engine"] = ScriptedAsyncEngine(config, script)
        return holder["engine"]

    engine = TurbomindEngine(
        TurbomindSettings(model=tiny_model_dir), build=build, runtime_check=lambda: []
    )
    engine.start()
    try:
        events = run_all(engine, [EngineRequest(id=k, prompt=k) for k in script])
    finally:
        engine.stop()
    assert holder["engine"].closed
    kinds = {k: [type(e).__name__ for e in v] for k, v in events.items()}
    assert kinds == {
        "multi": ["FirstToken", "Finished"],
        "empty": ["Finished"],
        "no-reason": ["FirstToken", "Failed"],
        "dies": ["FirstToken", "Failed"],
        "error": ["Failed"],
    }
    multi = terminal(events["multi"])
    assert (multi.text, multi.input_tokens, multi.output_tokens) == ("a b c d e", 7, 5)
    assert terminal(events["empty"]).finish_reason == "stop"
    assert "without a finish reason" in terminal(events["no-reason"]).error
    assert terminal(events["dies"]).error == "RuntimeError: CUDA error: an illegal memory access"
    assert "'error'" in terminal(events["error"]).error


def test_the_executor_runs_a_plan_on_it(make_engine):
    """batch_runner.executor drives the engine: one retry of a failing request, the rest finish."""
    from batch_runner.executor import execute

    engine, core = make_engine(max_batch_size=3, core_kw=dict(error_on={word_id("gamma")}))
    plan = [
        EngineRequest(id=f"r{i}", prompt=f"{WORDS[i]} hello", max_new_tokens=5, ignore_eos=True)
        for i in (5, 1, 4, 0, 3)
    ] + [EngineRequest(id="bad", prompt="gamma", max_new_tokens=5)]
    result = execute(engine, plan, inflight_cap=engine.slots, max_retries=1, poll_timeout=0.01)
    by_id = {m.id: m for m in result.measurements}
    assert [by_id[r.id].rank for r in plan] == list(range(len(plan)))
    for r in plan[:-1]:
        m = by_id[r.id]
        assert (m.output_tokens, m.finish_reason, m.error) == (5, "length", None)
        assert 0 <= m.submit_ms <= m.first_token_ms < m.finish_ms
    assert by_id["bad"].error is not None and by_id["bad"].attempts == 2
    # first attempts reached the engine in plan order; the retry came last
    arrived = [a.input_ids[1] for a in core.arrivals]
    assert arrived[:5] == [word_id(WORDS[i]) for i in (5, 1, 4, 0, 3)]
