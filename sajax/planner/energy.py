"""The energy of an order: the fast engine model's timings of a submission order, scored by
the SLO objective (``PlanEnergy``), exact re-scoring of many orders at many caps
(``score_orders``), and the point predictions the triage moves use (``predict``,
``predicted_met``, ``cap_met_fn``).

    energy = PlanEnergy("goodput", robust=False)
    e = score_orders(energy, orders, data, caps=[8, 4])  # (2, k)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sajax.engine_model import EngineModel
from sajax.metrics import slo_metrics
from sajax.objectives.slo import ObjectiveParams, get_objective
from sajax.problem import Problem
from sajax.simulate import simulate


class PlanData(NamedTuple):
    problem: Problem  # (N,) arrays; output_len is (K, N) in robust mode
    model: EngineModel  # the engine with the candidate cap as ``slots``
    params: ObjectiveParams
    offset_ms: Any  # () float32, added to predicted times (a window's start; 0 for a whole job)


def timings(
    order: jax.Array,
    problem: Problem,
    model: EngineModel,
    max_slots: int | None = None,
    kv: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(first_token_ms, finish_ms), (N,) float32 by row, of ``order`` under the fast model."""
    t = simulate(order, problem, model, max_slots=max_slots, kv=kv)
    return t.first_token_ms, t.finish_ms


@dataclasses.dataclass(frozen=True)
class PlanEnergy:
    """``energy(perm, PlanData) -> ()``: hashable, so ``jit`` caches one program per setting."""

    objective: str
    robust: bool
    head: int = 0  # a window's fixed context: the last ``head`` positions run first
    max_slots: int | None = None  # static slot buffer of the simulation (>= every cap)
    kv: bool = True  # whether the simulation checks the KV capacity

    def __call__(self, perm: jax.Array, data: PlanData) -> jax.Array:
        fn = get_objective(self.objective)
        order = jnp.roll(perm, self.head) if self.head else perm

        def one(output_len):
            problem = data.problem._replace(output_len=output_len)
            first, finish = timings(order, problem, data.model, self.max_slots, self.kv)
            return fn(first + data.offset_ms, finish + data.offset_ms, problem, data.params)

        if self.robust:
            return jnp.mean(jax.vmap(one)(data.problem.output_len))
        return one(data.problem.output_len)


SCORE_BATCH = 8  # orders scored per jitted call (a fixed shape: one compile per problem size)


def score_orders(energy: PlanEnergy, orders, data: PlanData, caps=None) -> np.ndarray:
    """(len(caps), k) float32 exact energies of k orders ((k, N) int) at each cap.

    ``caps=None`` scores at ``data.model`` as it is (one row). Orders go through in fixed
    batches of ``SCORE_BATCH`` and the cap is data, so new caps or counts do not recompile.
    """
    orders = np.asarray(orders, np.int32).reshape(-1, np.shape(orders)[-1])
    k = orders.shape[0]
    pad = -k % SCORE_BATCH
    padded = np.concatenate([orders, np.repeat(orders[:1], pad, axis=0)])
    models = [data.model] if caps is None else [with_cap(data.model, c) for c in caps]
    rows = []
    for m in models:
        d = data._replace(model=m)
        parts = [
            np.asarray(_score(energy, jnp.asarray(padded[i : i + SCORE_BATCH]), d))
            for i in range(0, len(padded), SCORE_BATCH)
        ]
        rows.append(np.concatenate(parts)[:k])
    return np.stack(rows)


def with_cap(model: EngineModel, cap: int) -> EngineModel:
    """``model`` (NumPy scalars) with ``slots = cap``."""
    m = _np_model(model)
    return m._replace(slots=np.asarray(cap, dtype=np.asarray(m.slots).dtype))


def _score_impl(energy, orders, data):
    return jax.vmap(energy, in_axes=(0, None))(orders, data)


_score = jax.jit(_score_impl, static_argnums=0)


_timings_jit = jax.jit(timings, static_argnums=(3, 4))


def predict(order, problem: Problem, model: EngineModel, energy: PlanEnergy):
    """(first_token_ms, finish_ms) as float64 NumPy arrays by row (one jitted simulation)."""
    first, finish = jax.device_get(
        _timings_jit(jnp.asarray(order, jnp.int32), problem, model, energy.max_slots, energy.kv)
    )
    return np.asarray(first, np.float64), np.asarray(finish, np.float64)


def predicted_met(order, problem: Problem, model: EngineModel, energy: PlanEnergy) -> np.ndarray:
    """(N,) bool by row: the request meets its SLO under ``predict`` (a triage ``met_fn``)."""
    return np.asarray(_metrics(*predict(order, problem, model, energy), problem).met)


def cap_met_fn(cp: Problem, model: EngineModel, cap: int, energy: PlanEnergy):
    """``predicted_met`` of ``cp`` at in-flight cap ``cap``, as a triage ``met_fn(order)``."""
    return functools.partial(predicted_met, problem=cp, model=with_cap(model, cap), energy=energy)


def _metrics(first, finish, cp: Problem, output_len=None):
    out = cp.output_len if output_len is None else output_len
    return slo_metrics(first, finish, out, cp.slo_e2e_ms, cp.slo_ttft_ms, cp.slo_tpot_ms)


def _np_model(model: EngineModel) -> EngineModel:
    return EngineModel(*(np.asarray(x) for x in model))
