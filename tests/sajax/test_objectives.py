"""SLO objectives: hand-checked values, padding, the surrogate and the registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sajax.objectives.slo import (
    OBJECTIVES,
    attainment_energy,
    get_objective,
    goodput_energy,
    goodput_window_energy,
    objective_params,
    soft_met,
    tardiness_energy,
)
from sajax.problem import Problem

INF = np.inf


def _problem(out, e2e, ttft, tpot, weight=None, mask=None):
    n = len(out)
    return Problem(
        input_len=np.full(n, 10, np.int32),
        output_len=np.asarray(out, np.int32),
        slo_e2e_ms=np.asarray(e2e, np.float32),
        slo_ttft_ms=np.asarray(ttft, np.float32),
        slo_tpot_ms=np.asarray(tpot, np.float32),
        weight=np.ones(n, np.float32) if weight is None else np.asarray(weight, np.float32),
        mask=np.ones(n, bool) if mask is None else np.asarray(mask, bool),
    )


# Three requests: (0) e2e SLO 1000 ms, finishes at 800: met; (1) TTFT 100 / TPOT 10 ms with
# first token at 50 and 11 tokens finishing at 250 -> tpot 20 ms: missed; (2) no SLO at all.
FIRST = np.array([100.0, 50.0, 300.0])
FINISH = np.array([800.0, 250.0, 1200.0])
PROB = _problem([5, 11, 3], [1000, INF, INF], [INF, 100, INF], [INF, 10, INF])


def test_goodput_is_hits_per_second_of_summed_latency():
    e = goodput_energy(FIRST, FINISH, PROB, objective_params(), xp=np)
    # one hit; summed e2e = 0.8 + 0.25 + 1.2 s (the best-effort row counts in latency)
    assert float(e) == pytest.approx(-1.0 / 2.25, rel=1e-6)


def test_attainment_counts_only_rows_with_an_slo_and_tie_break_is_small():
    params = objective_params(scale_ms=10_000.0)
    e = attainment_energy(FIRST, FINISH, PROB, params, xp=np)
    mean_e2e = (800 + 250 + 1200) / 3
    assert float(e) == pytest.approx(-0.5 + (0.5 / 2) * mean_e2e / 10_000, rel=1e-5)
    # the tie-break never outweighs one request: it is < 1 / n_slo / 2 in all cases
    late = attainment_energy(FIRST, FINISH * 1e6, PROB, params, xp=np)
    assert float(late) - (-0.0) <= 0.25 + 1e-6


def test_tardiness_sums_lateness_of_every_given_slo():
    e = tardiness_energy(FIRST, FINISH, PROB, objective_params(), xp=np)
    # row 1: TTFT 50 <= 100 on time; TPOT (250 - 50) / 10 = 20 vs 10 -> 10 ms x 10 tokens
    assert float(e) == pytest.approx(100.0 / 3, rel=1e-6)
    on_time = tardiness_energy(
        FIRST, np.array([800.0, 140.0, 1200.0]), PROB, objective_params(), xp=np
    )
    assert float(on_time) == 0.0


def test_padding_rows_count_nowhere():
    pad = _problem(
        [5, 11, 3, 1],
        [1000, INF, INF, 1.0],
        [INF, 100, INF, INF],
        [INF, 10, INF, INF],
        mask=[True, True, True, False],
    )
    first = np.append(FIRST, 9e9)
    finish = np.append(FINISH, 9e9)
    for name, fn in OBJECTIVES.items():
        a = fn(FIRST, FINISH, PROB, objective_params(scale_ms=1e4), xp=np)
        b = fn(first, finish, pad, objective_params(scale_ms=1e4), xp=np)
        assert float(a) == pytest.approx(float(b), rel=1e-6), name


def test_surrogate_is_half_at_zero_slack_and_exact_when_tau_is_zero():
    prob = _problem([1, 1], [100, 100], [INF, INF], [INF, INF])
    first = np.array([0.0, 0.0])
    finish = np.array([100.0, 300.0])
    met, _ = soft_met(first, finish, prob, 0.1, xp=np)
    assert met[0] == pytest.approx(0.5)
    assert met[1] < 1e-6
    exact, _ = soft_met(first, finish, prob, 0.0, xp=np)
    np.testing.assert_array_equal(exact, [1.0, 0.0])


def test_window_goodput_is_first_order_change_of_g():
    g_ref = 0.3
    params = objective_params(g_ref=g_ref)
    e = goodput_window_energy(FIRST, FINISH, PROB, params, xp=np)
    assert float(e) == pytest.approx(-(1.0 - g_ref * 2.25) / 3, rel=1e-6)


def test_objectives_jit_and_agree_with_numpy():
    params = objective_params(scale_ms=1e4)
    for name, fn in OBJECTIVES.items():
        jitted = jax.jit(lambda f, g, fn=fn: fn(f, g, PROB, params, xp=jnp))
        assert float(jitted(FIRST, FINISH)) == pytest.approx(
            float(fn(FIRST, FINISH, PROB, params, xp=np)), rel=1e-5
        ), name


def test_registry_names_and_errors():
    assert get_objective("G") is goodput_energy
    assert get_objective("g") is goodput_energy
    assert get_objective("attainment") is attainment_energy
    with pytest.raises(ValueError, match="unknown objective"):
        get_objective("speed")
    with pytest.raises(ValueError):
        objective_params(tau=-1.0)
