"""The annealing driver: many chains of the one-chain kernel, run in jitted chunks.

``anneal`` minimises any jittable ``energy_fn(perm, data) -> scalar`` (or ``energy_fn(perm)``
when ``data`` is None) over permutations of ``n`` items; ``anneal_many`` does the same for a batch
of instances of one shape (``data`` leaves with a leading instance axis), each with its own chains.

Layout. The state of every chain is the kernel's ``AnnealState``; the driver holds them as
(instances, chains, ...) arrays. ``kernel.step`` is scanned over a chunk of ``chunk_size`` steps
(``lax.scan``), the chain axis is added by one ``jax.vmap`` (a second one over instances in
``anneal_many``), and the chunk is one jitted call with no host round trip inside. The thin Python
loop between chunks evaluates the temperature schedule for the next chunk, restarts stagnant
chains from the best-so-far, exchanges replicas between neighbouring temperatures (optional),
calls the progress callback, and stops on the step count, the time budget, a target energy or the
callback's request.

Temperatures. Chain c of instance b at step s runs at ``T = schedule(s)[b] * ladder[c]``.
By default the schedule is geometric over an automatic range measured in a warm-up (one chunk of
greedy descent, then a sample of random moves; ``temperature_range`` multiplies the scale of a
small uphill move, see ``sajax.schedules.auto_range``); the run itself starts from the seeds.
With ``ladder_ratio`` > 1 the chains form a temperature ladder; ``exchange=True`` adds replica
exchange (parallel tempering) between neighbouring rungs after every chunk, with probability
``min(1, exp((E_c - E_c') (1/T_c - 1/T_c')))``.

Incremental energies. An ``energy_fn`` that is a ``sajax.incremental.IncrementalEnergy`` (e.g.
``weighted_tardiness(p, w, d, incremental=True)``) runs the delta step instead: the same
full-range moves, each scored by the energy's exact ``move_delta`` from a per-position cache
(one fused gather-free pass, no rescoring), ``proposals`` of them per step with the first that
passes taken; the new order and cache are built once per step, not per proposal. The cache is
built at the start of each chunk and the cached energies are recomputed in full at its end.

Proposals. With ``proposals=K`` a step scores K moves from one state and takes the first that
passes (exact sequential Metropolis, vectorised). ``AnnealResult.proposed`` counts the
sequential Metropolis steps the chains stood for (the taken proposal's index plus one, or K when
none passed), ``evaluated`` every scored move. ``select="best"`` takes the lowest-energy
proposal among those that pass instead: no longer sequential Metropolis (each step is a
greedy choice among up to K Metropolis-accepted moves), but it reaches low energies sooner
(weighted tardiness at n = 1000: BENCHMARKS.md, annealer); a step then counts as K.

Restarts. A chain whose own best has not improved for ``restart_patience`` chunks jumps to the
best permutation of its instance (its own best is kept).

Recompilation. Shapes are the compile key: ``n``, ``chains``, ``chunk_size``, ``proposals``, the
instance count and the data's shapes. Temperatures, move mix, ``n_valid``, step counts, data
values, seeds and the time budget are arrays or host-side values, so a new instance of the same
(padded) size or a new schedule reuses the compiled program. ``energy_fn`` is a static argument:
pass the same function object (not a fresh lambda) to reuse the cache.

Determinism. Without a time budget the result is a function of ``key`` and the arguments (same
key, same result, on one machine and jax version). With ``time_budget_s`` the number of chunks and
the temperatures depend on wall-clock time (the schedule is stretched or squeezed so that cooling
ends when the budget does), so two runs with one key may differ; every chunk's randomness is still
``fold_in(key, chunk)``, so the seeds and the first chunk are reproducible.

    energy_fn, data = sajax.objectives.weighted_tardiness(p, w, d)
    result = sajax.anneal(energy_fn, jax.random.key(0), len(p), data=data, chains=64, steps=20_000)
    result.best_perm, result.best_energy
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sajax.incremental import IncrementalEnergy, delta_step_from_uniforms
from sajax.kernel import SELECT, AnnealState, init, step_from_uniforms
from sajax.moves import MoveMix, draw_move, move_mix
from sajax.schedules import Schedule, auto_range, geometric, ladder


class AnnealHistory(NamedTuple):
    steps: np.ndarray  # (k,) int64, steps done per chain after each chunk
    elapsed_s: np.ndarray  # (k,) float64, wall-clock seconds since the call started
    best_energy: np.ndarray  # (k,) or (k, B) float32, best energy so far (per instance)


class AnnealResult(NamedTuple):
    """The outcome of ``anneal`` (shapes for one instance; ``anneal_many`` adds a leading B)."""

    best_perm: np.ndarray  # (n,) int32, best permutation over all chains
    best_energy: np.ndarray  # () float32, its energy (inf if no finite energy was seen)
    chain_best_perm: np.ndarray  # (C, n) int32, each chain's best
    chain_best_energy: np.ndarray  # (C,) float32
    final_perm: np.ndarray  # (C, n) int32, each chain's current permutation at the end
    final_energy: np.ndarray  # (C,) float32
    accepted: np.ndarray  # (C,) int64, accepted moves per chain
    proposed: np.ndarray  # (C,) int64, sequential Metropolis steps per chain (see evaluated)
    acceptance_rate: np.ndarray  # (C,) float64, accepted / proposed
    restarts: np.ndarray  # (C,) int64, restarts from the best-so-far per chain
    exchanges: np.ndarray  # (C,) int64, accepted replica exchanges per chain
    t_start: np.ndarray  # () float64, temperature at step 0 (ladder rung 1)
    t_end: np.ndarray  # () float64, temperature at the last step run
    steps: int  # steps run per chain
    chunks: int  # jitted chunks run
    elapsed_s: float  # wall-clock seconds, compilation included
    evaluated: int  # moves scored per chain: steps x proposals (>= proposed when K > 1)
    stop_reason: str  # "steps", "time_budget", "target" or "callback"
    history: AnnealHistory


class Progress(NamedTuple):
    """What the callback sees after each chunk; return True from the callback to stop."""

    chunk: int
    steps_done: int
    steps_total: int
    elapsed_s: float
    best_energy: np.ndarray  # () or (B,) float32
    temperature: np.ndarray  # () or (B,) float64, the schedule's temperature at the last step


@dataclasses.dataclass(frozen=True)
class _IgnoreData:
    """``energy_fn(perm)`` seen as ``energy_fn(perm, data)``; hashable, so jit caches it."""

    fn: Callable[[jax.Array], jax.Array]

    def __call__(self, perm, data):
        return self.fn(perm)


def _map_chains(fn, data_batched: bool, single: bool = False):
    """The one vmap over chains, plus the instance axis: leaves (B, C, ...).

    ``single`` (one instance, one chain): no vmap at all, so that a ``lax.cond`` in the step
    stays a real branch (under vmap it becomes a select that runs both sides).
    """
    if single:

        def call(s, u, t, d, nv):
            one = jax.tree.map(lambda x: x[0, 0], (s, u, t))
            d = jax.tree.map(lambda x: x[0], d) if data_batched else d
            return jax.tree.map(lambda x: x[None, None], fn(*one, d, nv[0]))

        return call
    per_instance = jax.vmap(fn, in_axes=(0, 0, 0, None, None))
    return jax.vmap(per_instance, in_axes=(0, 0, 0, 0 if data_batched else None, 0))


@partial(jax.jit, static_argnames=("energy_fn", "data_batched"))
def _init_states(perms, data, *, energy_fn, data_batched):
    def one(perm, _u, _t, d, _nv):
        return init(perm, energy_fn, d)

    b, c = perms.shape[:2]
    dummy = jnp.zeros((b, c))
    return _map_chains(one, data_batched)(perms, dummy, dummy, data, jnp.zeros(b))


@partial(jax.jit, static_argnames=("energy_fn", "data_batched", "proposals", "select"))
def _run_chunk(
    key, state, temps, active, data, n_valid, probs, *, energy_fn, data_batched, proposals, select
):
    """Scan ``L`` steps of every chain: temps (B, C, L), active (L,) bool, n_valid (B,)."""

    def chain(s, u, t, d, nv):
        def body(s, x):
            u_l, t_l, a_l = x
            new, info = step_from_uniforms(
                u_l, s, t_l, d, energy_fn=energy_fn, probs=probs, n_valid=nv, select=select
            )
            new = jax.tree.map(lambda a, b: jnp.where(a_l, a, b), new, s)
            return new, (info.accepted & a_l, info.improved & a_l, info.sequential * a_l)

        s, (acc, imp, seq) = jax.lax.scan(body, s, (u, t, active))
        return s, jnp.sum(acc, dtype=jnp.int32), jnp.any(imp), jnp.sum(seq, dtype=jnp.int32)

    def delta_chain(s, u, t, d, nv):
        def body(carry, x):
            s, cache = carry
            u_l, t_l, a_l = x
            s, cache, info = delta_step_from_uniforms(
                u_l,
                s,
                cache,
                t_l,
                d,
                inc=energy_fn,
                probs=probs,
                n_valid=nv,
                active=a_l,
                select=select,
            )
            return (s, cache), (info.accepted, info.improved, info.sequential * a_l)

        cache = energy_fn.init_cache(s.perm, d)
        (s, _), (acc, imp, seq) = jax.lax.scan(body, (s, cache), (u, t, active))
        acc = jnp.sum(acc, dtype=jnp.int32)
        return _resync(s, energy_fn, d), acc, jnp.any(imp), jnp.sum(seq, dtype=jnp.int32)

    b, c, length = temps.shape
    single = b == c == 1
    if isinstance(energy_fn, IncrementalEnergy):
        u = jax.random.uniform(key, (b, c, length, proposals, 4))
        return _map_chains(delta_chain, data_batched, single)(state, u, temps, data, n_valid)
    shape = (b, c, length, 4) if proposals == 1 else (b, c, length, proposals, 4)
    u = jax.random.uniform(key, shape)
    return _map_chains(chain, data_batched, single)(state, u, temps, data, n_valid)


def _resync(state: AnnealState, inc: IncrementalEnergy, data: Any) -> AnnealState:
    """Recompute the cached energies with the full energy (bounds the rounding of deltas)."""
    energy = jnp.asarray(inc.energy(state.perm, data), jnp.float32)
    best = jnp.asarray(inc.energy(state.best_perm, data), jnp.float32)
    best = jnp.where(jnp.isnan(best), jnp.inf, best)
    current_is_best = energy < best  # possible only through rounding; keep "best <= current"
    return AnnealState(
        perm=state.perm,
        energy=energy,
        best_perm=jnp.where(current_is_best, state.perm, state.best_perm),
        best_energy=jnp.where(current_is_best, energy, best),
    )


@partial(jax.jit, static_argnames=("energy_fn", "data_batched"))
def _neighbour_deltas(key, state, samples, data, n_valid, probs, *, energy_fn, data_batched):
    """Energy changes of ``samples`` (K,) random moves from each chain's state: (B, C, K)."""

    incremental = isinstance(energy_fn, IncrementalEnergy)

    def chain(s, u, _t, d, nv):
        if incremental:
            cache = energy_fn.init_cache(s.perm, d)
            kind, i, j = jax.vmap(draw_move, in_axes=(0, None, None))(u[:, :3], nv, probs)
            delta = jax.vmap(energy_fn.move_delta, in_axes=(None, 0, 0, 0, None))
            return delta(cache, kind, i, j, d)

        def one(u_k):
            _, info = step_from_uniforms(
                u_k, s, 0.0, d, energy_fn=energy_fn, probs=probs, n_valid=nv
            )
            return info.delta

        return jax.vmap(one)(u)

    b, c = state.energy.shape
    u = jax.random.uniform(key, (b, c, samples.shape[0], 4))
    return _map_chains(chain, data_batched)(state, u, jnp.zeros((b, c)), data, n_valid)


@jax.jit
def _between_chunks(key, state, stale, improved, patience, temps, do_exchange, parity):
    """Restart stagnant chains from their instance's best; then replica exchange (optional)."""
    b, c = state.energy.shape
    stale = jnp.where(improved, 0, stale + 1)
    best_chain = jnp.argmin(state.best_energy, axis=1)  # (B,)
    best_perm = jnp.take_along_axis(state.best_perm, best_chain[:, None, None], axis=1)
    best_energy = jnp.take_along_axis(state.best_energy, best_chain[:, None], axis=1)
    restart = stale >= patience
    perm = jnp.where(restart[..., None], best_perm, state.perm)
    energy = jnp.where(restart, best_energy, state.energy)
    stale = jnp.where(restart, 0, stale)

    # Pairs (k, k+1) with k = parity mod 2; rungs are ordered by the ladder.
    idx = jnp.arange(c)
    up = (idx - parity) % 2 == 0
    partner = jnp.where(up, idx + 1, idx - 1)
    partner = jnp.where((partner < 0) | (partner >= c), idx, partner)
    u = jax.random.uniform(key, (b, c))
    u_pair = jnp.take_along_axis(u, jnp.broadcast_to(jnp.minimum(idx, partner), (b, c)), axis=1)
    e_self = jnp.where(jnp.isnan(energy), jnp.inf, energy)
    e_other = e_self[:, partner]
    t_other = temps[:, partner]
    log_ratio = (e_self - e_other) * (1.0 / temps - 1.0 / t_other)
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    swap = do_exchange & (partner != idx) & (jnp.log(u_pair) < log_ratio)
    perm = jnp.where(swap[..., None], perm[:, partner], perm)
    energy = jnp.where(swap, energy[:, partner], energy)
    state = state._replace(perm=perm, energy=energy)
    return state, stale, restart, swap


def _random_perms(key, b: int, c: int, n: int, n_valid: np.ndarray) -> jax.Array:
    """(B, C, n) int32: the first n_valid[b] positions shuffled, the tail in order."""
    u = jax.random.uniform(key, (b, c, n))
    k = jnp.arange(n)
    sort_key = jnp.where(k < jnp.asarray(n_valid)[:, None, None], u, 2.0 + k)
    return jnp.argsort(sort_key, axis=-1).astype(jnp.int32)


def _seed_perms(key, init_perms, b: int, c: int, n: int, n_valid: np.ndarray) -> jax.Array:
    perms = np.array(_random_perms(key, b, c, n, n_valid))
    if init_perms is None:
        return jnp.asarray(perms)
    seeds = np.asarray(init_perms)
    if seeds.ndim == 1:
        seeds = seeds[None]
    if seeds.ndim == 2:
        seeds = np.broadcast_to(seeds, (b, *seeds.shape))
    if seeds.ndim != 3 or seeds.shape[0] != b or seeds.shape[2] != n or seeds.shape[1] > c:
        raise ValueError(
            f"init_perms must have shape (k, {n}) or ({b}, k, {n}) with k <= chains={c}; "
            f"got {np.shape(init_perms)}"
        )
    if not np.array_equal(np.sort(seeds, axis=-1), np.broadcast_to(np.arange(n), seeds.shape)):
        raise ValueError("every row of init_perms must be a permutation of 0..n-1")
    perms[:, : seeds.shape[1]] = seeds
    return jnp.asarray(perms)


def _anneal(
    energy_fn,
    key: jax.Array,
    n: int,
    data: Any,
    data_batched: bool,
    batch: int,
    *,
    chains: int,
    steps: int,
    init_perms,
    n_valid,
    schedule: Schedule | None,
    temperature_range: tuple[float, float],
    moves: MoveMix | None,
    ladder_ratio: float | None,
    exchange: bool,
    restart_patience: int | None,
    chunk_size: int,
    proposals: int,
    select: str,
    warmup_chunks: int,
    warmup_samples: int | None,
    time_budget_s: float | None,
    target_energy,
    callback: Callable[[Progress], bool | None] | None,
) -> AnnealResult:
    started = time.perf_counter()
    if n < 1 or chains < 1 or steps < 0 or chunk_size < 1:
        raise ValueError("need n >= 1, chains >= 1, steps >= 0 and chunk_size >= 1")
    incremental = isinstance(energy_fn, IncrementalEnergy)
    if proposals < 1:
        raise ValueError(f"need proposals >= 1, got {proposals}")
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, got {select!r}")
    if data is None and not incremental:
        energy_fn = _IgnoreData(energy_fn)
    probs = (moves or move_mix()).probs
    n_valid_b = np.broadcast_to(np.asarray(n if n_valid is None else n_valid), (batch,))
    if np.any(n_valid_b < 1) or np.any(n_valid_b > n):
        raise ValueError(f"n_valid must be in 1..{n}; got {n_valid}")
    n_valid_b = jnp.asarray(n_valid_b, jnp.int32)
    static = dict(energy_fn=energy_fn, data_batched=data_batched)
    chunk_static = dict(static, proposals=proposals, select=select)

    key_seed, key_warm, key_run, key_swap = jax.random.split(key, 4)
    perms = _seed_perms(key_seed, init_perms, batch, chains, n, np.asarray(n_valid_b))
    state = _init_states(perms, data, **static)

    if schedule is None:
        if warmup_samples is None:
            warmup_samples = max(32, -(-512 // chains))
        # Measure the landscape where the search spends its time: near local optima. A greedy
        # descent (one chunk at T = 0, the same compiled program) then a neighbourhood sample.
        key_descent, key_sample = jax.random.split(key_warm)
        descended = state
        for k in range(warmup_chunks):
            descended, _, _, _ = _run_chunk(
                jax.random.fold_in(key_descent, k),
                descended,
                jnp.zeros((batch, chains, chunk_size), jnp.float32),
                jnp.ones((chunk_size,), bool),
                data,
                n_valid_b,
                probs,
                **chunk_static,
            )
        deltas = _neighbour_deltas(
            key_sample, descended, jnp.zeros(warmup_samples), data, n_valid_b, probs, **static
        )
        deltas = np.asarray(deltas).reshape(batch, -1)
        t0, t1 = auto_range(deltas, *temperature_range)
        schedule = geometric(t0, t1, steps)
    rungs = ladder(chains, ladder_ratio) if ladder_ratio else np.ones(chains)
    patience = jnp.int32(restart_patience if restart_patience else np.iinfo(np.int32).max)
    targets = None if target_energy is None else np.broadcast_to(target_energy, (batch,))

    def temps_at(step_idx: np.ndarray) -> np.ndarray:
        base = _evaluate(schedule, step_idx, batch)
        return base[:, None, :] * rungs[None, :, None]

    accepted = jnp.zeros((batch, chains), jnp.int32)
    sequential = np.zeros((batch, chains), np.int64)
    restarts = jnp.zeros((batch, chains), jnp.int32)
    exchanges = jnp.zeros((batch, chains), jnp.int32)
    stale = jnp.zeros((batch, chains), jnp.int32)
    hist_steps, hist_time, hist_best = [], [], []
    done, chunk, clock, stop_reason = 0, 0, 0, "steps"
    # durations of the recent chunks; their median predicts the next one (0 while unknown)
    recent_s, chunk_end = [], time.perf_counter()
    last_t = _evaluate(schedule, np.zeros(1, np.int64), batch)[:, 0]
    while done < steps:
        length = min(chunk_size, steps - done)
        step_idx = clock + np.arange(chunk_size)
        temps = temps_at(step_idx)
        active = jnp.asarray(np.arange(chunk_size) < length)
        state, acc, improved, seq = _run_chunk(
            jax.random.fold_in(key_run, chunk),
            state,
            jnp.asarray(temps, jnp.float32),
            active,
            data,
            n_valid_b,
            probs,
            **chunk_static,
        )
        accepted = accepted + acc
        sequential = sequential + np.asarray(seq, np.int64)
        done += length
        last_t = temps[:, 0, length - 1]
        state, stale, restarted, swapped = _between_chunks(
            jax.random.fold_in(key_swap, chunk),
            state,
            stale,
            improved,
            patience,
            jnp.asarray(temps[:, :, length - 1], jnp.float32),
            jnp.bool_(exchange),
            chunk % 2,
        )
        restarts = restarts + restarted
        exchanges = exchanges + swapped
        chunk += 1

        best = np.asarray(jnp.min(state.best_energy, axis=1))
        now = time.perf_counter()
        elapsed = now - started
        if chunk >= 2:  # the first chunk's time includes compilation
            recent_s = [*recent_s[-2:], now - chunk_end]
        chunk_end = now
        chunk_s = float(np.median(recent_s)) if recent_s else 0.0
        hist_steps.append(done)
        hist_time.append(elapsed)
        hist_best.append(best)
        clock = done
        if time_budget_s is not None and time_budget_s > 0:
            # Stretch or squeeze the schedule so that cooling ends with the budget.
            clock = max(done, int(steps * min(elapsed / time_budget_s, 1.0)))
        progress = Progress(
            chunk,
            done,
            steps,
            elapsed,
            _squeeze(best, data_batched),
            _squeeze(last_t, data_batched),
        )
        if callback is not None and callback(progress):
            stop_reason = "callback"
            break
        if targets is not None and np.all(best <= targets):
            stop_reason = "target"
            break
        # stop when the next chunk (the median of the last three) would end past the budget
        if time_budget_s is not None and elapsed + chunk_s >= time_budget_s and done < steps:
            stop_reason = "time_budget"
            break

    state = jax.device_get(state)
    accepted, restarts, exchanges, proposed = (
        np.asarray(x, np.int64) for x in (accepted, restarts, exchanges, sequential)
    )
    best_chain = np.argmin(state.best_energy, axis=1)
    rows = np.arange(batch)
    result = AnnealResult(
        best_perm=state.best_perm[rows, best_chain],
        best_energy=state.best_energy[rows, best_chain],
        chain_best_perm=state.best_perm,
        chain_best_energy=state.best_energy,
        final_perm=state.perm,
        final_energy=state.energy,
        accepted=accepted,
        proposed=proposed,
        acceptance_rate=accepted / np.maximum(proposed, 1),
        restarts=restarts,
        exchanges=exchanges,
        t_start=_evaluate(schedule, np.zeros(1, np.int64), batch)[:, 0],
        t_end=np.broadcast_to(last_t, (batch,)),
        steps=done,
        chunks=chunk,
        elapsed_s=time.perf_counter() - started,
        evaluated=done * proposals,
        stop_reason=stop_reason,
        history=AnnealHistory(
            np.asarray(hist_steps, np.int64),
            np.asarray(hist_time),
            np.asarray(hist_best).reshape(len(hist_best), batch),
        ),
    )
    if data_batched:
        return result
    return result._replace(
        **{f: getattr(result, f)[0] for f in _PER_INSTANCE},
        history=result.history._replace(best_energy=result.history.best_energy[:, 0]),
    )


_PER_INSTANCE = (
    "best_perm best_energy chain_best_perm chain_best_energy final_perm final_energy accepted "
    "proposed acceptance_rate restarts exchanges t_start t_end"
).split()


def _evaluate(schedule: Schedule, step_idx: np.ndarray, batch: int) -> np.ndarray:
    """(B, L) temperatures: the schedule sees steps as (L, 1) so (B,) parameters broadcast."""
    temps = np.asarray(schedule(step_idx[:, None]), np.float64)
    return np.broadcast_to(temps.reshape(len(step_idx), -1), (len(step_idx), batch)).T


def _squeeze(x: np.ndarray, data_batched: bool) -> np.ndarray:
    return x if data_batched else np.asarray(x)[0]


def anneal(
    energy_fn: Callable[..., jax.Array],
    key: jax.Array,
    n: int,
    *,
    chains: int = 64,
    steps: int = 10_000,
    data: Any = None,
    init_perms=None,
    n_valid: int | None = None,
    schedule: Schedule | None = None,
    temperature_range: tuple[float, float] = (0.1, 0.003),
    moves: MoveMix | None = None,
    ladder_ratio: float | None = None,
    exchange: bool = False,
    restart_patience: int | None = None,
    chunk_size: int = 256,
    proposals: int = 1,
    select: str = "first",
    warmup_chunks: int = 1,
    warmup_samples: int | None = None,
    time_budget_s: float | None = None,
    target_energy: float | None = None,
    callback: Callable[[Progress], bool | None] | None = None,
) -> AnnealResult:
    """Minimise ``energy_fn`` over permutations of ``n`` items with ``chains`` parallel chains.

    Args:
      energy_fn: ``energy_fn(perm, data) -> scalar`` (``energy_fn(perm)`` if ``data`` is None),
        jittable, for one (n,) int32 permutation. NaN energies are never accepted. An
        ``IncrementalEnergy`` selects the delta path (module doc).
      key: a JAX PRNG key; the result is a deterministic function of it (but see time_budget_s).
      n: permutation length (the padded size).
      chains: parallel chains (a compile-time shape).
      steps: kernel steps per chain (any number; no recompile); each stands for up to
        ``proposals`` sequential Metropolis steps.
      data: a pytree of arrays passed to ``energy_fn`` (a new instance of the same shapes reuses
        the compiled program).
      init_perms: (k, n) seed orders for the first k <= chains chains (others start random).
      n_valid: only positions 0..n_valid-1 move (padding stays at the tail); default n.
      schedule: ``step -> temperature``; default geometric over an automatic range.
      temperature_range: (start, end) of the automatic geometric schedule, as multiples of the
        small-uphill-move scale measured in the warm-up (``sajax.schedules.auto_range``).
      moves: the move mix (``sajax.moves.move_mix``).
      ladder_ratio: > 1 gives chain c the temperature ``schedule(s) * ratio**(c / (chains-1))``.
      exchange: replica exchange between neighbouring rungs after every chunk.
      restart_patience: restart a chain from the best-so-far after this many chunks without a
        new best of its own (None: never).
      chunk_size: steps per jitted chunk (a compile-time shape).
      proposals: K, proposals evaluated at once per step; the first that passes is taken
        (exact sequential Metropolis, vectorised; see ``kernel.step_from_uniforms``). A
        compile-time shape. ``steps`` counts steps, so a chain evaluates ``steps * K`` moves.
        Pays most with an ``IncrementalEnergy``, whose proposals are cheap (K = 16-32 on a
        CPU at n = 1000).
      select: ``"first"`` (default: the first proposal that passes, exact sequential
        Metropolis) or ``"best"`` (the lowest-energy one that passes; module doc). Static.
      warmup_chunks, warmup_samples: the automatic temperature range is measured on
        ``warmup_samples`` random moves per chain (default: at least 32, and at least 512 over
        all chains) from states reached by ``warmup_chunks`` chunks of greedy descent (the run
        itself starts from the seeds, not from these states).
      time_budget_s: stop between chunks once this many wall-clock seconds (from the call,
        compilation included) have passed, or when the next chunk (timed as the median of the
        last three) would end past them; the schedule follows the budget's clock.
      target_energy: stop between chunks once the best energy is <= this.
      callback: called with a ``Progress`` after each chunk; returning True stops the run.
    """
    return _anneal(
        energy_fn,
        key,
        n,
        data,
        False,
        1,
        **_options(locals()),
    )


def anneal_many(
    energy_fn: Callable[..., jax.Array],
    key: jax.Array,
    n: int,
    data: Any,
    *,
    chains: int = 64,
    steps: int = 10_000,
    init_perms=None,
    n_valid=None,
    schedule: Schedule | None = None,
    temperature_range: tuple[float, float] = (0.1, 0.003),
    moves: MoveMix | None = None,
    ladder_ratio: float | None = None,
    exchange: bool = False,
    restart_patience: int | None = None,
    chunk_size: int = 256,
    proposals: int = 1,
    select: str = "first",
    warmup_chunks: int = 1,
    warmup_samples: int | None = None,
    time_budget_s: float | None = None,
    target_energy=None,
    callback: Callable[[Progress], bool | None] | None = None,
) -> AnnealResult:
    """``anneal`` for B instances at once: ``data`` leaves have a leading axis B.

    Each instance gets its own ``chains`` chains, temperature range and best; every field of
    the result gains a leading axis B. ``n_valid`` and ``target_energy`` may be (B,) arrays,
    ``init_perms`` (k, n) (shared) or (B, k, n). Stops on ``target_energy`` once every
    instance has reached its target.
    """
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("anneal_many needs data with a leading instance axis")
    batch = int(np.shape(leaves[0])[0])
    if any(np.shape(x)[:1] != (batch,) for x in leaves):
        raise ValueError("every leaf of data must have the same leading instance axis")
    return _anneal(energy_fn, key, n, data, True, batch, **_options(locals()))


def _options(scope: dict) -> dict:
    names = (
        "chains steps init_perms n_valid schedule temperature_range moves ladder_ratio "
        "exchange restart_patience chunk_size proposals select warmup_chunks warmup_samples "
        "time_budget_s target_energy callback"
    ).split()
    return {k: scope[k] for k in names}


__all__ = ["AnnealHistory", "AnnealResult", "AnnealState", "Progress", "anneal", "anneal_many"]
