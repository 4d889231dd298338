"""Contract tests against the REAL lmdeploy 0.18 classes (no GPU, no TurboMind kernels).

What is real here: lmdeploy's TurbomindEngineConfig, GenerationConfig (with its own validation),
PytorchEngineConfig, lmdeploy.turbomind.is_available(), and the AsyncEngine constructor, which
reads our tiny local model and then fails at the TurboMind build because the compiled extension
cannot load without CUDA.
"""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace

import pytest

from batch_runner.engines.base import EngineError, EngineRequest, SamplingParams
from batch_runner.engines.turbomind import (
    TurbomindEngine,
    TurbomindSettings,
    build_async_engine,
    check_backend,
    generation_config,
    runtime_problems,
    turbomind_engine_config,
)

lmdeploy = pytest.importorskip("lmdeploy")
pytestmark = pytest.mark.turbomind


def test_the_installed_lmdeploy_is_the_version_these_contracts_were_read_from():
    assert lmdeploy.__version__.startswith("0.18.")


def test_engine_config_is_a_real_turbomind_config_with_our_fields():
    settings = TurbomindSettings(
        model="/m",
        max_batch_size=48,
        session_len=6144,
        cache_max_entry_count=0.5,
        max_prefill_token_num=4096,
        tp=2,
        dtype="bfloat16",
    )
    config = turbomind_engine_config(settings)
    assert type(config) is lmdeploy.TurbomindEngineConfig
    assert (config.max_batch_size, config.session_len) == (48, 6144)
    assert config.cache_max_entry_count == 0.5
    assert (config.max_prefill_token_num, config.tp, config.dtype) == (4096, 2, "bfloat16")
    assert config.enable_metrics is False
    assert config.enable_prefix_caching is False  # a prefix cache would change prefill times


def test_generation_config_greedy():
    request = EngineRequest(id="r", prompt="hi", max_new_tokens=77, ignore_eos=True)
    config = generation_config(request)
    assert type(config) is lmdeploy.GenerationConfig
    assert (config.max_new_tokens, config.ignore_eos, config.do_sample) == (77, True, False)


def test_generation_config_sampling_carries_temperature_top_p_and_seed():
    request = EngineRequest(
        id="r",
        prompt="hi",
        max_new_tokens=5,
        sampling=SamplingParams(temperature=0.7, top_p=0.9, seed=1234),
    )
    config = generation_config(request)
    assert config.do_sample is True and config.ignore_eos is False
    assert (config.temperature, config.top_p, config.top_k) == (0.7, 0.9, 0)
    assert config.random_seed == 1234


def test_generation_config_out_of_range_sampling_is_refused_by_lmdeploy():
    bad = EngineRequest(id="r", prompt="hi", sampling=SamplingParams(temperature=3.0))
    with pytest.raises(ValueError, match="'r': sampling parameters LMDeploy refuses"):
        generation_config(bad)


def test_turbomind_is_unavailable_here_and_runtime_problems_say_why():
    from lmdeploy import turbomind

    assert turbomind.is_available() is False
    problems = " ".join(runtime_problems())
    assert "no CUDA GPU is visible" in problems
    assert "lmdeploy.turbomind.is_available() is False" in problems
    assert "extension failed to load" in problems  # lmdeploy kept the ImportError: we show it


def test_start_raises_a_clear_engine_error_on_this_machine(tiny_model_dir):
    engine = TurbomindEngine(TurbomindSettings(model=tiny_model_dir))
    with pytest.raises(EngineError) as info:
        engine.start()
    message = str(info.value)
    assert message.startswith("cannot start the TurboMind engine")
    assert "no CUDA GPU" in message and "TurboMind is unavailable" in message


def test_the_real_async_engine_refuses_turbomind_here_and_start_wraps_it(tiny_model_dir):
    """Without our pre-check: AsyncEngine reads the model, then cannot build TurboMind."""
    settings = TurbomindSettings(model=tiny_model_dir, max_batch_size=2)
    with pytest.raises(RuntimeError, match="TurboMind was requested but its native module"):
        build_async_engine(settings, turbomind_engine_config(settings))
    engine = TurbomindEngine(settings, runtime_check=lambda: [])
    with pytest.raises(EngineError, match="could not load .* on TurboMind"):
        engine.start()


def test_a_pytorch_fallback_is_detected_and_closed(tiny_model_dir):
    """What lmdeploy.pipeline() builds when TurboMind cannot load: the PyTorch backend."""
    fallback = SimpleNamespace(
        backend="pytorch", backend_config=lmdeploy.PytorchEngineConfig(), closed=False
    )
    fallback.close = lambda: setattr(fallback, "closed", True)
    with pytest.raises(EngineError, match="'pytorch' backend .*PytorchEngineConfig"):
        check_backend(fallback)
    engine = TurbomindEngine(
        TurbomindSettings(model=tiny_model_dir),
        runtime_check=lambda: [],
        build=lambda settings, config: fallback,
    )
    with pytest.raises(EngineError, match="instead of TurboMind"):
        engine.start()
    assert fallback.closed
    # A backend name alone is not enough: the config must be TurboMind's too.
    renamed = SimpleNamespace(backend="turbomind", backend_config=lmdeploy.PytorchEngineConfig())
    with pytest.raises(EngineError):
        check_backend(renamed)
    check_backend(
        SimpleNamespace(
            backend="turbomind",
            backend_config=turbomind_engine_config(TurbomindSettings(model="/m")),
        )
    )


def test_the_signatures_we_call_accept_our_arguments():
    """Each lmdeploy call in batch_runner/engines/turbomind.py, bound to the installed code."""
    from lmdeploy.serve.core import AsyncEngine
    from lmdeploy.serve.processors import MultimodalProcessor

    settings = TurbomindSettings(model="/m")
    config = turbomind_engine_config(settings)
    gen = generation_config(EngineRequest(id="r", prompt="hi"))
    inspect.signature(AsyncEngine.__init__).bind(
        None,
        settings.model,
        backend="turbomind",
        backend_config=config,
        trust_remote_code=False,
    )
    inspect.signature(AsyncEngine.preprocess).bind(
        None, messages="hi", session_id=1, gen_config=gen
    )
    inspect.signature(AsyncEngine.generate).bind(None, object(), stream_response=True)
    inspect.signature(AsyncEngine.start_loop).bind(
        None, asyncio.new_event_loop(), use_async_api=False
    )
    inspect.signature(AsyncEngine.close).bind(None)
    inspect.signature(MultimodalProcessor.get_prompt_input).bind(
        None, prompt=[{"role": "user", "content": "hi"}], do_preprocess=True
    )
    assert inspect.isasyncgenfunction(AsyncEngine.generate)
    assert inspect.iscoroutinefunction(AsyncEngine.preprocess)
    assert inspect.iscoroutinefunction(MultimodalProcessor.get_prompt_input)


def test_genout_has_the_fields_we_read():
    from lmdeploy.serve.core.async_engine import GenOut

    fields = {f.name for f in __import__("dataclasses").fields(GenOut)}
    assert {"response", "input_token_len", "generate_token_len", "finish_reason"} <= fields
