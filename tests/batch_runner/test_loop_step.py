"""--replan auto|on|off: which jobs get the closed loop (batch_runner.job.loop_step.make_loop)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from batch_runner.engines.sim import SimEngine
from batch_runner.errors import ConfigError
from batch_runner.job import JobConfig, make_plan
from batch_runner.job.loop_step import make_loop
from sajax.engine_model import EngineModel

MODEL = EngineModel(
    slots=np.int32(2),
    token_budget=np.int32(256),
    a_ms=np.float32(5.0),
    b_ms=np.float32(0.05),
    c_ms=np.float32(0.001),
    kv_capacity=np.int32(0),
)


class OnHostSim(SimEngine):
    """The simulator, marked as an engine that computes on this machine's cores (as llamacpp)."""

    computes_on_host = True


@pytest.fixture(scope="module")
def table():
    n = 6
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "prompt": ["hello world " * (i + 1) for i in range(n)],
            "max_new_tokens": [8] * n,
            "slo_e2e_ms": [50.0 * (i + 1) for i in range(n)],
        }
    )


def _loop(table, engine, replan, policy="sajax"):
    config = JobConfig(input=None, out=None, policy=policy, replan=replan, time_budget=0.5)
    plan = make_plan(table, engine, config)
    return make_loop(config, engine, table, plan, engine.model)


@pytest.mark.parametrize(
    ("engine_cls", "replan", "expect_loop"),
    [
        (SimEngine, "auto", True),
        (OnHostSim, "auto", False),  # re-planning would take the engine's own cores
        (OnHostSim, "on", True),
        (SimEngine, "off", False),
    ],
)
def test_which_engines_get_the_loop(table, engine_cls, replan, expect_loop):
    loop = _loop(table, engine_cls(MODEL), replan)
    assert (loop is not None) == expect_loop
    if loop is not None:
        loop.close(timeout=5)


def test_llamacpp_engine_says_it_computes_on_the_host():
    from batch_runner.engines.llamacpp import LlamaCppEngine

    assert LlamaCppEngine.computes_on_host is True
    assert getattr(SimEngine, "computes_on_host", False) is False


def test_heuristic_policies_get_no_loop(table):
    assert _loop(table, SimEngine(MODEL), "on", policy="fcfs") is None


def test_unknown_mode_is_a_config_error(table):
    with pytest.raises(ConfigError, match="--replan"):
        _loop(table, SimEngine(MODEL), "sometimes")
