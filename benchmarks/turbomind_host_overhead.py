"""Host-side cost of streaming through TurbomindEngine, on a CPU, with TurboMind's core faked.

On a GPU, TurboMind hands every running sequence's new tokens to Python each iteration; with
128 sequences and ~20 ms iterations that is ~6,400 chunks/s that lmdeploy's AsyncEngine and our
wrapper must absorb without falling behind. This measures that ceiling on this machine: the REAL
lmdeploy AsyncEngine (preprocess, generate, detokeniser, session manager) over the fake core of
tests/turbomind/fake_turbomind.py with zero step time, one token per chunk, driven

  (a) bare:    lmdeploy alone - one asyncio task per request, preprocess then generate;
  (b) engine:  through TurbomindEngine - submit(), the loop thread, the event queue, poll().

Chunks/s of each and the ratio (b)/(a) go to stdout. Needs .venv-turbomind:

    .venv-turbomind/bin/python benchmarks/turbomind_host_overhead.py --requests 200 --tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batch_runner.engines.base import EngineRequest, Failed, Finished  # noqa: E402
from batch_runner.engines.turbomind import (  # noqa: E402
    TurbomindEngine,
    TurbomindSettings,
    build_async_engine,
    generation_config,
    turbomind_engine_config,
)
from tests.turbomind.fake_turbomind import FakeTurboMind  # noqa: E402
from tests.turbomind.tiny_model import WORDS, build_tiny_model  # noqa: E402


def patch_core():
    from lmdeploy.serve.core import AsyncEngine

    def fake(self, model_path, backend_config=None, **kwargs):
        return FakeTurboMind(backend_config, vocab_size=3 + len(WORDS), tokens_per_step=1, step_s=0)

    AsyncEngine._build_turbomind = fake


def requests(n, tokens):
    return [
        EngineRequest(
            id=f"r{i}", prompt=f"{WORDS[i % 8]} hello world", max_new_tokens=tokens, ignore_eos=True
        )
        for i in range(n)
    ]


def run_bare(settings, reqs):
    engine = build_async_engine(settings, turbomind_engine_config(settings))

    async def one(i, r):
        prepared = await engine.preprocess(
            messages=r.prompt, session_id=i + 1, gen_config=generation_config(r)
        )
        last = None
        async for out in engine.generate(prepared, stream_response=True):
            last = out
        out = last
        assert out.finish_reason == "length" and out.generate_token_len == r.max_new_tokens

    async def main():
        engine.start_loop(asyncio.get_running_loop(), use_async_api=True)
        t = time.perf_counter()
        await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs)))
        return time.perf_counter() - t

    seconds = asyncio.run(main())
    engine.close()
    return seconds


def run_engine(settings, reqs):
    engine = TurbomindEngine(settings, runtime_check=lambda: [])
    engine.start()
    t = time.perf_counter()
    for r in reqs:
        engine.submit(r)
    left, tokens = len(reqs), 0
    while left:
        for event in engine.poll(0.002):
            if isinstance(event, Failed):
                raise RuntimeError(f"request failed: {event}")
            if isinstance(event, Finished):
                left -= 1
                tokens += event.output_tokens
    seconds = time.perf_counter() - t
    engine.stop()
    assert tokens == sum(r.max_new_tokens for r in reqs), tokens
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.getLogger("lmdeploy").setLevel("WARNING")
    patch_core()
    model = build_tiny_model(tempfile.mkdtemp())
    settings = TurbomindSettings(model=model, max_batch_size=args.batch)
    reqs = requests(args.requests, args.tokens)
    chunks = args.requests * args.tokens
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()} "
        f"python {platform.python_version()}; {args.requests} requests x {args.tokens} tokens "
        f"(1 token/chunk), max_batch_size {args.batch}"
    )
    for rep in range(args.repeats):
        bare = run_bare(settings, reqs)
        ours = run_engine(settings, reqs)
        print(
            f"repeat {rep}: bare lmdeploy {chunks / bare:8.0f} chunks/s ({bare:.2f} s), "
            f"TurbomindEngine {chunks / ours:8.0f} chunks/s ({ours:.2f} s), "
            f"time ratio engine/bare {ours / bare:.2f}"
        )


if __name__ == "__main__":
    main()
