"""The simulated-annealing kernel for ONE chain: ``init`` and ``step``, pure functions.

A step proposes a neighbour ``perm'`` of the current permutation (``sajax.moves``), evaluates
``E' = energy_fn(perm', data)`` (a full O(n) recompute) and accepts it by the Metropolis rule

    accept  <=>  E' <= E  or  u < exp(-(E' - E) / T),      u ~ U[0, 1)

written branch-free with ``jnp.where``. ``T = 0`` accepts only non-worsening moves, ``T = +inf``
accepts every move with a finite energy. A NaN energy is never accepted and never becomes the
best; a current energy that is NaN counts as ``+inf`` (any finite proposal is accepted).

The chain axis is added by the driver with one ``jax.vmap`` (``sajax.anneal``)::

    state = init(perm, energy_fn, data)
    state, info = step(key, state, temperature, data, energy_fn=energy_fn, probs=mix.probs)

``step_from_uniforms`` is the same step with its randomness given as uniforms, so that a driver
can draw a whole chunk's randomness in one call (faster on CPU). A step may evaluate K proposals
at once and take the first that passes (``proposals=K``): exact sequential Metropolis, vectorised;
or, with ``select="best"``, the lowest-energy one among those that pass (``pick``): a greedier
chain that reaches good energies sooner at low temperature, not sequential Metropolis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sajax.moves import apply_move, draw_move

EnergyFn = Callable[[jax.Array, Any], jax.Array]
EXP_FLOOR = 80.0  # exp(-80) ~ 1.8e-35, still a normal float32
SELECT = ("first", "best")  # which of K passing proposals a step takes (``pick``)


class AnnealState(NamedTuple):
    perm: jax.Array  # (n,) int32, the current permutation of 0..n-1
    energy: jax.Array  # () float32, energy_fn(perm, data); NaN counts as +inf
    best_perm: jax.Array  # (n,) int32, the best permutation this chain has visited
    best_energy: jax.Array  # () float32, its energy; never NaN (+inf until a finite one is seen)


class StepInfo(NamedTuple):
    move: jax.Array  # () int32, SWAP / INSERT / REVERSE
    proposed_energy: jax.Array  # () float32, energy of the proposal (may be NaN)
    delta: jax.Array  # () float32, proposed minus current energy
    accepted: jax.Array  # () bool, the proposal became the current state
    improved: jax.Array  # () bool, the proposal became the chain's best
    sequential: jax.Array  # () int32, sequential Metropolis steps this step stands for (K rows:
    #                        the taken proposal's index + 1, or K when none passed)


def _energy(energy_fn: EnergyFn, perm: jax.Array, data: Any) -> jax.Array:
    return jnp.asarray(energy_fn(perm, data), jnp.float32)


def _finite_or_inf(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isnan(x), jnp.inf, x)


def init(perm: jax.Array, energy_fn: EnergyFn, data: Any = None) -> AnnealState:
    """The state of a chain that starts at ``perm`` ((n,) int32)."""
    perm = jnp.asarray(perm, jnp.int32)
    energy = _energy(energy_fn, perm, data)
    return AnnealState(perm, energy, perm, _finite_or_inf(energy))


def metropolis_accept(
    u: jax.Array, energy: jax.Array, proposed: jax.Array, temperature: jax.Array
) -> jax.Array:
    """Branch-free Metropolis test; NaN-safe (see module doc)."""
    current = _finite_or_inf(energy)
    delta = proposed - current
    downhill = proposed <= current
    # x = -delta / T: -inf for T = 0 and delta > 0; NaN for inf / inf, which compares False.
    # Below -EXP_FLOOR the acceptance probability (< 1e-34) is under the resolution of u and
    # counts as 0; clamping keeps exp out of the float32 denormal range.
    x = -delta / temperature
    uphill = (x > -EXP_FLOOR) & (u < jnp.exp(jnp.maximum(x, -EXP_FLOOR)))
    return downhill | uphill


def pick(passed: jax.Array, energies: jax.Array, select: str = "first") -> jax.Array:
    """Index of the proposal a K-proposal step takes (0 when none passed): the first that passed
    (``"first"``) or the lowest-energy one that passed (``"best"``)."""
    if select == "first":
        return jnp.argmax(passed)
    if select == "best":
        best = jnp.argmin(jnp.where(passed, energies, jnp.inf))
        return jnp.where(passed[best], best, jnp.argmax(passed))  # all +inf: the first
    raise ValueError(f"select must be one of {SELECT}, got {select!r}")


def stood_for(taken_passed: jax.Array, first: jax.Array, k: int, select: str) -> jax.Array:
    """Sequential Metropolis steps a K-proposal step stands for: the taken proposal's index + 1
    with ``"first"``, else (``"best"``, or nothing passed) all K."""
    taken = first + 1 if select == "first" else k
    return jnp.where(taken_passed, taken, k).astype(jnp.int32)


def step_from_uniforms(
    u: jax.Array,
    state: AnnealState,
    temperature: jax.Array,
    data: Any,
    *,
    energy_fn: EnergyFn,
    probs: jax.Array,
    n_valid: jax.Array | None = None,
    select: str = "first",
) -> tuple[AnnealState, StepInfo]:
    """One step driven by ``u``: (4,) or (K, 4) uniforms in [0, 1) (kind, i, j, accept).

    With K rows, K proposals from the same state are evaluated at once (vectorised) and the
    first one that passes its Metropolis test is taken. This is exactly K sequential Metropolis
    steps as long as the proposals before it were rejected (they leave the state unchanged); the
    proposals after it are discarded. It pays at low temperature, where most proposals fail.
    The best-so-far considers every evaluated proposal. ``select="best"``: see ``pick`` (the
    step then stands for K sequential steps).
    """
    n = state.perm.shape[0]
    n_valid = n if n_valid is None else n_valid
    if u.ndim == 1:  # one proposal: the same rule without the proposal axis (~10% faster)
        kind, i, j = draw_move(u[:3], n_valid, probs)
        proposal = apply_move(state.perm, kind, i, j)
        proposed = _energy(energy_fn, proposal, data)
        accepted = metropolis_accept(u[3], state.energy, proposed, temperature)
        improved = proposed < state.best_energy  # False for NaN
        new_state = AnnealState(
            perm=jnp.where(accepted, proposal, state.perm),
            energy=jnp.where(accepted, proposed, state.energy),
            best_perm=jnp.where(improved, proposal, state.best_perm),
            best_energy=jnp.where(improved, proposed, state.best_energy),
        )
        info = StepInfo(kind, proposed, proposed - state.energy, accepted, improved, jnp.int32(1))
        return new_state, info
    kind, i, j = jax.vmap(draw_move, in_axes=(0, None, None))(u[:, :3], n_valid, probs)
    proposals = jax.vmap(apply_move, in_axes=(None, 0, 0, 0))(state.perm, kind, i, j)
    energies = jax.vmap(lambda perm: _energy(energy_fn, perm, data))(proposals)
    passed = metropolis_accept(u[:, 3], state.energy, energies, temperature)
    first = pick(passed, energies, select)
    accepted = passed[first]
    best = jnp.argmin(_finite_or_inf(energies))
    improved = energies[best] < state.best_energy  # False for NaN
    new_state = AnnealState(
        perm=jnp.where(accepted, proposals[first], state.perm),
        energy=jnp.where(accepted, energies[first], state.energy),
        best_perm=jnp.where(improved, proposals[best], state.best_perm),
        best_energy=jnp.where(improved, energies[best], state.best_energy),
    )
    sequential = stood_for(accepted, first, u.shape[0], select)
    info = StepInfo(
        kind[first], energies[first], energies[first] - state.energy, accepted, improved, sequential
    )
    return new_state, info


def step(
    key: jax.Array,
    state: AnnealState,
    temperature: jax.Array,
    data: Any,
    *,
    energy_fn: EnergyFn,
    probs: jax.Array,
    n_valid: jax.Array | None = None,
    proposals: int = 1,
    select: str = "first",
) -> tuple[AnnealState, StepInfo]:
    """One Metropolis step of one chain (``proposals`` > 1: see ``step_from_uniforms``)."""
    u = jax.random.uniform(key, (4,) if proposals == 1 else (proposals, 4))
    return step_from_uniforms(
        u,
        state,
        temperature,
        data,
        energy_fn=energy_fn,
        probs=probs,
        n_valid=n_valid,
        select=select,
    )
