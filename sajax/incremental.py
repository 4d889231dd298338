"""Incremental energies: the exact energy change of a full-range move without rescoring.

The plain kernel step (``sajax.kernel``) rescores every proposal in full: gathers, a prefix sum,
a reduction. Many energies can instead give the change of a move from a per-position cache of
the current order in one fused, gather-free pass over the positions. For weighted tardiness
every move shifts the completion times of a contiguous block by one amount (swap, insert) or
mirrors them (reversal), so

    delta(kind, i, j) = sum_k region_k * (cost_k(new completion) - cost_k)  +  O(1) terms

is one elementwise expression and a sum over n positions: no gather, no prefix sum. That makes
K proposals from one state cheap to score together, and the step takes the first that passes
its Metropolis test (exact sequential Metropolis: the proposals before it were rejected and
left the state unchanged). At low temperature most proposals fail, so one step advances the
chain by up to K sequential steps. The O(n) commit (the moved permutation and a fresh cache)
is paid once per step, not per proposal. The chain's best-so-far considers the taken proposal
only (the plain K-proposal step of ``sajax.kernel`` also looks at the rejected ones, which it
has rescored in full anyway).

``IncrementalEnergy`` packages the pure functions::

    cache = inc.init_cache(perm, data)                 # pytree of (n, ...) arrays
    delta = inc.move_delta(cache, kind, i, j, data)    # energy(apply_move(perm, kind, i, j))
                                                       #   - energy(perm), for one move

and ``delta_step_from_uniforms`` is the kernel step for ONE chain (the driver adds the chain
axis with ``vmap``, as for the plain step). Moves are the full-range ones of ``sajax.moves``,
drawn exactly as the plain step draws them. The cached energy is ``E + sum of accepted
deltas``; the driver recomputes it (and each chain's best energy) with the full ``energy`` at
the end of every chunk, so rounding never accumulates beyond a chunk. The path assumes finite
energies (a NaN delta is never accepted, as in ``sajax.kernel``).

An ``IncrementalEnergy`` is also a plain energy function (``inc(perm, data)`` calls
``inc.energy``), so it goes wherever an ``energy_fn`` goes; ``sajax.anneal`` then takes this
path (``proposals=K`` sets K)::

    inc, data = sajax.objectives.weighted_tardiness(p, w, d, incremental=True)
    result = sajax.anneal(inc, key, len(p), data=data, chains=1, proposals=32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sajax.kernel import AnnealState, StepInfo, metropolis_accept, pick, stood_for
from sajax.moves import apply_move, draw_move


class IncrementalEnergy(NamedTuple):
    """Pure functions of an energy with cheap exact move deltas (see module doc); hashable."""

    energy: Callable[[jax.Array, Any], jax.Array]  # full energy(perm, data) -> ()
    init_cache: Callable[[jax.Array, Any], Any]  # (perm, data) -> pytree of (n, ...) leaves
    move_delta: Callable[..., jax.Array]  # (cache, kind, i, j, data) -> () energy change

    def __call__(self, perm: jax.Array, data: Any) -> jax.Array:
        return self.energy(perm, data)


def delta_step_from_uniforms(
    u: jax.Array,
    state: AnnealState,
    cache: Any,
    temperature: jax.Array,
    data: Any,
    *,
    inc: IncrementalEnergy,
    probs: jax.Array,
    n_valid: jax.Array | None = None,
    active: jax.Array | bool = True,
    select: str = "first",
) -> tuple[AnnealState, Any, StepInfo]:
    """One step of one chain driven by ``u``: (K, 4) uniforms in [0, 1) (kind, i, j, accept).

    K proposals from the same state are scored by ``inc.move_delta`` and the first that passes
    is taken (module doc). ``active=False`` scores them but changes nothing (padding steps of a
    chunk). ``select="best"`` takes the lowest-energy proposal that passes instead
    (``sajax.kernel.pick``). Returns the new state, the new cache and the ``StepInfo`` of the
    taken (or first) proposal; its ``sequential`` is how many sequential Metropolis steps the
    step stands for (K for ``"best"``).
    """
    n = state.perm.shape[0]
    n_valid = n if n_valid is None else n_valid
    kind, i, j = jax.vmap(draw_move, in_axes=(0, None, None))(u[:, :3], n_valid, probs)
    deltas = jax.vmap(inc.move_delta, in_axes=(None, 0, 0, 0, None))(cache, kind, i, j, data)
    deltas = jnp.asarray(deltas, jnp.float32)
    proposed = state.energy + deltas
    passed = metropolis_accept(u[:, 3], state.energy, proposed, temperature)
    first = pick(passed, deltas, select)  # 0 when none passed
    accepted = passed[first] & active
    energy = proposed[first]
    improved = accepted & (energy < state.best_energy)  # False for NaN

    def commit(state_cache):
        state, _ = state_cache
        perm = apply_move(state.perm, kind[first], i[first], j[first])
        new_state = AnnealState(
            perm=perm,
            energy=energy,
            best_perm=jnp.where(improved, perm, state.best_perm),
            best_energy=jnp.where(improved, energy, state.best_energy),
        )
        return new_state, inc.init_cache(perm, data)

    # A real branch for one chain (the commit is skipped when nothing passed); under vmap over
    # chains JAX turns it into a select of both sides.
    new_state, cache = jax.lax.cond(accepted, commit, lambda sc: sc, (state, cache))
    sequential = stood_for(passed[first], first, u.shape[0], select)
    info = StepInfo(kind[first], energy, deltas[first], accepted, improved, sequential)
    return new_state, cache, info
