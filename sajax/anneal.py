"""The annealing driver: many chains of the one-chain kernel, run in jitted chunks.

``anneal`` minimises any jittable ``energy_fn(perm, data) -> scalar`` (or ``energy_fn(perm)``
when ``data`` is None) over permutations of ``n`` items; ``anneal_many`` does the same for a batch
of instances of one shape (``data`` leaves with a leading instance axis), each with its own chains.

Layout. The state of every chain is the kernel's ``AnnealState``; the driver holds them as
(instances, chains, ...) arrays. ``kernel.step`` is scanned over a chunk of ``chunk_size`` steps
(``lax.scan``), the chain axis is added by one ``jax.vmap`` (a second one over instances in
``anneal_many``), and the chunk is one jitted call with no host round trip inside
(``sajax.anneal_chunk``). Inside the chunk, stagnant chains are kicked (below). The thin Python
loop between chunks (``sajax.anneal_driver``) evaluates the temperature schedule for the next
chunk, exchanges replicas between neighbouring temperatures (optional), calls the progress
callback, and stops on the step count, the time budget, a target energy or the callback's
request.

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
passes (exact sequential Metropolis, vectorised: the same chain as up to K one-proposal steps,
since the rejected proposals before the taken one left the state unchanged).
``AnnealResult.proposed`` counts the sequential Metropolis steps the chains stood for (the taken
proposal's index plus one, or K when none passed), ``evaluated`` every scored move.
``select="best"`` takes the lowest-energy proposal among those that pass instead: no longer
sequential Metropolis (each step is a greedy choice among up to K Metropolis-accepted moves),
but it reaches low energies sooner (weighted tardiness at n = 1000: BENCHMARKS.md, annealer); a
step then counts as K.

Stagnation (``sajax.stagnation``; on by default). A chain whose own best has not improved for
``restart_patience`` steps (default ``3 n_valid**2 / proposals``: three times the steps in which
its K proposals a step have sampled as many moves as the neighbourhood holds) is kicked: its
current order becomes a best order (its own; with several chains, every other kick its
instance's best) perturbed by 8 random moves of the mix, and the search descends from there
(iterated local search). Its best is kept. The check runs every few steps inside the chunk
(``sajax.anneal_chunk``). A kick is a jump outside the Metropolis rule: with kicks, a
``select="first"`` chain is exact sequential Metropolis between kicks only; ``restarts=False``
turns them off (pure Metropolis chains, the behaviour and results before kicks existed).
``restarts``, ``last_improvement`` and ``history.acceptance`` / ``history.restarts`` in the
result show a stall and its escapes.

Recompilation. Shapes are the compile key: ``n``, ``chains``, ``chunk_size``, ``proposals``,
``select``, ``restarts``, the instance count and the data's shapes. Temperatures, move mix,
``n_valid``, step counts, data values, seeds, the restart patience and the time budget are
arrays or host-side values, so a new instance of the same (padded) size or a new schedule reuses
the compiled program. ``energy_fn`` is a static argument:
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

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from sajax.anneal_driver import AnnealHistory, AnnealResult, Progress, run
from sajax.kernel import AnnealState
from sajax.moves import MoveMix
from sajax.schedules import Schedule


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
    restarts: bool = True,
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
      restarts: kick a chain whose best has not improved for ``restart_patience`` steps
        (module doc, ``sajax.stagnation``); False: never (pure Metropolis chains). Static.
      restart_patience: steps without a new best of the chain's own before a kick; None
        (default): ``sajax.stagnation.default_patience`` (``3 n_valid**2 / proposals``).
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
    return run(energy_fn, key, n, data, False, 1, **_options(locals()))


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
    restarts: bool = True,
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
    return run(energy_fn, key, n, data, True, batch, **_options(locals()))


def _options(scope: dict) -> dict:
    names = (
        "chains steps init_perms n_valid schedule temperature_range moves ladder_ratio "
        "exchange restarts restart_patience chunk_size proposals select warmup_chunks "
        "warmup_samples time_budget_s target_energy callback"
    ).split()
    return {k: scope[k] for k in names}


__all__ = ["AnnealHistory", "AnnealResult", "AnnealState", "Progress", "anneal", "anneal_many"]
