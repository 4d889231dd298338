"""The annealing driver's host loop: seeds, the warm-up, chunks, the clock, the result.

``run`` is what ``sajax.anneal`` and ``sajax.anneal_many`` call (their module doc describes the
method); the jitted programs it runs are in ``sajax.anneal_chunk``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sajax.anneal_chunk import exchange_replicas, init_states, neighbour_deltas, run_chunk
from sajax.incremental import IncrementalEnergy
from sajax.kernel import SELECT
from sajax.moves import MoveMix, move_mix
from sajax.schedules import Schedule, auto_range, geometric, ladder
from sajax.stagnation import default_patience


class AnnealHistory(NamedTuple):
    steps: np.ndarray  # (k,) int64, steps done per chain after each chunk
    elapsed_s: np.ndarray  # (k,) float64, wall-clock seconds since the call started
    best_energy: np.ndarray  # (k,) or (k, B) float32, best energy so far (per instance)
    acceptance: np.ndarray  # (k,) or (k, B) float64, accepted / sequential steps in the chunk
    #                         (all chains of the instance)
    restarts: np.ndarray  # (k,) or (k, B) int64, kicks so far (all chains of the instance)


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
    restarts: np.ndarray  # (C,) int64, kicks per chain (stagnation escapes, sajax.stagnation)
    last_improvement: np.ndarray  # (C,) int64, step at which the chain's best last improved
    #                               (0-based; -1: never, its seed is its best)
    restart_patience: np.ndarray  # () int64, steps without a new best before a kick (0: off)
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


def _random_perms(key, b: int, c: int, n: int, n_valid: np.ndarray) -> jax.Array:
    """(B, C, n) int32: the first n_valid[b] positions shuffled, the tail in order."""
    scores = jax.random.uniform(key, (b, c, n))
    k = jnp.arange(n)
    scores = jnp.where(k < jnp.asarray(n_valid)[:, None, None], scores, 2.0 + k)
    return jnp.argsort(scores, axis=-1).astype(jnp.int32)


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


def _patience(restarts: bool, restart_patience, n_valid: np.ndarray, proposals: int):
    """(B,) int32 kick patience in steps (module doc of sajax.stagnation)."""
    if not isinstance(restarts, bool):
        raise ValueError(f"restarts must be True or False, got {restarts!r}")
    if not restarts:
        return np.zeros_like(n_valid, np.int32)
    if restart_patience is None:
        return default_patience(n_valid, proposals)
    patience = np.broadcast_to(np.asarray(restart_patience), n_valid.shape)
    if np.any(patience < 1):
        raise ValueError(
            f"restart_patience must be >= 1 steps (or None for automatic; restarts=False turns "
            f"kicks off); got {restart_patience}"
        )
    return patience.astype(np.int32)


def run(
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
    restarts: bool,
    restart_patience,
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
    n_valid_np = np.broadcast_to(np.asarray(n if n_valid is None else n_valid), (batch,))
    if np.any(n_valid_np < 1) or np.any(n_valid_np > n):
        raise ValueError(f"n_valid must be in 1..{n}; got {n_valid}")
    patience_np = _patience(restarts, restart_patience, n_valid_np, proposals)
    n_valid_b = jnp.asarray(n_valid_np, jnp.int32)
    patience = jnp.asarray(patience_np, jnp.int32)
    static = dict(energy_fn=energy_fn, data_batched=data_batched)
    chunk_static = dict(static, proposals=proposals, select=select, kicks=restarts)

    key_seed, key_warm, key_run, key_swap = jax.random.split(key, 4)
    perms = _seed_perms(key_seed, init_perms, batch, chains, n, np.asarray(n_valid_b))
    state = init_states(perms, data, **static)
    zeros = jnp.zeros((batch, chains), jnp.int32)
    no_kicks = jnp.full((batch,), np.iinfo(np.int32).max, jnp.int32)

    if schedule is None:
        if warmup_samples is None:
            warmup_samples = max(32, -(-512 // chains))
        # Measure the landscape where the search spends its time: near local optima. A greedy
        # descent (one chunk at T = 0, the same compiled program) then a neighbourhood sample.
        key_descent, key_sample = jax.random.split(key_warm)
        descended = state
        for k in range(warmup_chunks):
            descended = run_chunk(
                jax.random.fold_in(key_descent, k),
                descended,
                jnp.zeros((batch, chains, chunk_size), jnp.float32),
                jnp.ones((chunk_size,), bool),
                data,
                n_valid_b,
                probs,
                zeros,
                zeros,
                no_kicks,  # the same program; the warm-up is a plain descent
                **chunk_static,
            ).state
        deltas = neighbour_deltas(
            key_sample, descended, jnp.zeros(warmup_samples), data, n_valid_b, probs, **static
        )
        deltas = np.asarray(deltas).reshape(batch, -1)
        t0, t1 = auto_range(deltas, *temperature_range)
        schedule = geometric(t0, t1, steps)
    rungs = ladder(chains, ladder_ratio) if ladder_ratio else np.ones(chains)
    targets = None if target_energy is None else np.broadcast_to(target_energy, (batch,))

    def temps_at(step_idx: np.ndarray) -> np.ndarray:
        base = _evaluate(schedule, step_idx, batch)
        return base[:, None, :] * rungs[None, :, None]

    accepted = np.zeros((batch, chains), np.int64)
    sequential = np.zeros((batch, chains), np.int64)
    exchanges = jnp.zeros((batch, chains), jnp.int32)
    stale, kicks = zeros, zeros
    last_improvement = np.full((batch, chains), -1, np.int64)
    hist_steps, hist_time, hist_best, hist_acc, hist_kicks = [], [], [], [], []
    done, chunk, clock, stop_reason = 0, 0, 0, "steps"
    # durations of the recent chunks; their median predicts the next one (0 while unknown)
    recent_s, chunk_end = [], time.perf_counter()
    last_t = _evaluate(schedule, np.zeros(1, np.int64), batch)[:, 0]
    while done < steps:
        length = min(chunk_size, steps - done)
        step_idx = clock + np.arange(chunk_size)
        temps = temps_at(step_idx)
        active = jnp.asarray(np.arange(chunk_size) < length)
        out = run_chunk(
            jax.random.fold_in(key_run, chunk),
            state,
            jnp.asarray(temps, jnp.float32),
            active,
            data,
            n_valid_b,
            probs,
            stale,
            kicks,
            patience,
            **chunk_static,
        )
        acc, seq, last = (np.asarray(x, np.int64) for x in (out.accepted, out.sequential,
                                                            out.last_improved))  # fmt: skip
        accepted += acc
        sequential += seq
        last_improvement = np.where(last >= 0, done + last, last_improvement)
        stale, kicks = out.stale, out.kicks
        done += length
        last_t = temps[:, 0, length - 1]
        state, swapped = exchange_replicas(
            jax.random.fold_in(key_swap, chunk),
            out.state,
            jnp.asarray(temps[:, :, length - 1], jnp.float32),
            jnp.bool_(exchange),
            chunk % 2,
        )
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
        hist_acc.append(acc.sum(axis=1) / np.maximum(seq.sum(axis=1), 1))
        hist_kicks.append(np.asarray(kicks, np.int64).sum(axis=1))
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
    restarts_np, exchanges = (np.asarray(x, np.int64) for x in (kicks, exchanges))
    best_chain = np.argmin(state.best_energy, axis=1)
    rows = np.arange(batch)

    def per_chunk(values, dtype):
        return np.asarray(values, dtype).reshape(len(values), batch)

    result = AnnealResult(
        best_perm=state.best_perm[rows, best_chain],
        best_energy=state.best_energy[rows, best_chain],
        chain_best_perm=state.best_perm,
        chain_best_energy=state.best_energy,
        final_perm=state.perm,
        final_energy=state.energy,
        accepted=accepted,
        proposed=sequential,
        acceptance_rate=accepted / np.maximum(sequential, 1),
        restarts=restarts_np,
        last_improvement=last_improvement,
        restart_patience=patience_np.astype(np.int64),
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
            per_chunk(hist_best, np.float32),
            per_chunk(hist_acc, np.float64),
            per_chunk(hist_kicks, np.int64),
        ),
    )
    if data_batched:
        return result
    first = {f: getattr(result, f)[0] for f in _PER_INSTANCE}
    history = result.history
    return result._replace(
        **first,
        history=history._replace(
            best_energy=history.best_energy[:, 0],
            acceptance=history.acceptance[:, 0],
            restarts=history.restarts[:, 0],
        ),
    )


_PER_INSTANCE = (
    "best_perm best_energy chain_best_perm chain_best_energy final_perm final_energy accepted "
    "proposed acceptance_rate restarts last_improvement restart_patience exchanges t_start t_end"
).split()


def _evaluate(schedule: Schedule, step_idx: np.ndarray, batch: int) -> np.ndarray:
    """(B, L) temperatures: the schedule sees steps as (L, 1) so (B,) parameters broadcast."""
    temps = np.asarray(schedule(step_idx[:, None]), np.float64)
    return np.broadcast_to(temps.reshape(len(step_idx), -1), (len(step_idx), batch)).T


def _squeeze(x: np.ndarray, data_batched: bool) -> np.ndarray:
    return x if data_batched else np.asarray(x)[0]
