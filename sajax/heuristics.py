"""Heuristic submission orders, and each request's time alone on an idle engine.

Every order is an (N,) int32 permutation of the rows with the padding rows at the end; ties keep
file order (stable sorts). With ``d_i = min(slo_e2e_i, slo_ttft_i)`` (inf when neither is set):

- ``fcfs``: file order — what LMDeploy and vLLM do with a batch.
- ``sjf``: shortest predicted job first, by ``alone_time(...).e2e_ms``.
- ``edf``: earliest deadline first, by ``d_i``; rows without a deadline last.
- ``least_slack``: by ``min(slo_e2e_i - e2e_alone_i, slo_ttft_i - ttft_alone_i)``; no deadline last.

``alone_time`` is exact under ``sajax.refsim`` for one request on an idle engine: with budget
``B``, a prompt of ``n`` tokens takes ``q = n // B`` full chunks and one of ``r = n % B`` (if any);
chunk ``i`` attends ``i * B`` tokens (the last: ``n``); then ``out - 1`` decode steps attend
``n + 1, ..., n + out - 1``::

    ttft = (q + [r > 0]) a + b n + c (B q (q + 1) / 2 + [r > 0] n)
    e2e  = ttft + (out - 1)(a + b + c n) + c (out - 1) out / 2
    tpot = (e2e - ttft) / (out - 1)      (0 when out = 1)

    order = edf(problem)            # or sjf(problem, model), least_slack(problem, model)
    hopeless(problem, model)        # rows that miss their SLO even alone on the engine
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sajax.engine_model import EngineModel
from sajax.problem import Problem


class AloneTime(NamedTuple):
    e2e_ms: jax.Array  # (N,) float32, finish time alone on an idle engine
    ttft_ms: jax.Array  # (N,) float32, first-token time alone
    tpot_ms: jax.Array  # (N,) float32, time per output token after the first, alone


def alone_time(problem: Problem, model: EngineModel) -> AloneTime:
    """Each request's e2e / TTFT / TPOT alone on an idle engine (exact under the reference)."""
    n = jnp.maximum(jnp.asarray(problem.input_len, jnp.float32), 1.0)
    out = jnp.maximum(jnp.asarray(problem.output_len, jnp.float32), 1.0)
    a, b, c, d = (
        jnp.asarray(x, jnp.float32) for x in (model.a_ms, model.b_ms, model.c_ms, model.d_ms)
    )
    budget = jnp.maximum(jnp.asarray(model.token_budget, jnp.float32), 1.0)
    q = jnp.floor(n / budget)
    partial = (n - q * budget > 0).astype(jnp.float32)
    ttft = (q + partial) * a + b * n + c * (budget * q * (q + 1) / 2 + partial * n) + d
    steps = out - 1
    decode = steps * (a + b + d + c * n) + c * steps * out / 2
    tpot = jnp.where(steps > 0, decode / jnp.maximum(steps, 1.0), 0.0)
    return AloneTime(e2e_ms=ttft + decode, ttft_ms=ttft, tpot_ms=tpot)


def hopeless(problem: Problem, model: EngineModel) -> jax.Array:
    """(N,) bool: real rows whose SLO fails even alone on an idle engine."""
    t = alone_time(problem, model)
    miss = (
        (t.e2e_ms > _slo(problem.slo_e2e_ms))
        | (t.ttft_ms > _slo(problem.slo_ttft_ms))
        | (t.tpot_ms > _slo(problem.slo_tpot_ms))
    )
    return miss & jnp.asarray(problem.mask, bool)


def fcfs(problem: Problem, model: EngineModel | None = None) -> jax.Array:
    """File order (the real rows, then padding)."""
    del model
    return _order_by(jnp.zeros(jnp.shape(problem.mask), jnp.float32), problem)


def sjf(problem: Problem, model: EngineModel) -> jax.Array:
    """Shortest predicted job first (alone-on-idle-engine e2e)."""
    return _order_by(alone_time(problem, model).e2e_ms, problem)


def edf(problem: Problem, model: EngineModel | None = None) -> jax.Array:
    """Earliest deadline first; deadline = min(e2e SLO, TTFT SLO); rows without one last."""
    del model
    return _order_by(deadline(problem), problem)


def least_slack(problem: Problem, model: EngineModel) -> jax.Array:
    """Least slack first: slack = deadline minus the alone-time it bounds; no deadline last."""
    t = alone_time(problem, model)
    slack = jnp.minimum(_slo(problem.slo_e2e_ms) - t.e2e_ms, _slo(problem.slo_ttft_ms) - t.ttft_ms)
    return _order_by(slack, problem)


def deadline(problem: Problem) -> jax.Array:
    """(N,) float32: the tightest of the e2e and TTFT SLOs (inf: none)."""
    return jnp.minimum(_slo(problem.slo_e2e_ms), _slo(problem.slo_ttft_ms))


slack = least_slack  # the CLI's policy name
HEURISTICS = {"fcfs": fcfs, "sjf": sjf, "edf": edf, "least_slack": least_slack}


def _slo(x) -> jax.Array:
    x = jnp.asarray(x, jnp.float32)
    return jnp.where(jnp.isnan(x), jnp.inf, x)


def _order_by(key: jax.Array, problem: Problem) -> jax.Array:
    """Stable sort of the real rows by ``key`` (NaN and inf last), padding rows at the end."""
    key = jnp.where(jnp.isnan(key), jnp.inf, key)
    padding = ~jnp.asarray(problem.mask, bool)
    return jnp.lexsort((key, padding)).astype(jnp.int32)
