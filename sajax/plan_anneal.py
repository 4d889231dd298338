"""The planner's annealing driver over ``sajax.plan_search``: chains at every finalist cap in one
batch, a clock-driven geometric schedule, compile time inside the budget.

``anneal_plan`` runs chains ``cap_finalists x per_cap`` in one compiled chunk program (the caps
are data: each chain carries its own model), ``chunk_size`` steps per call:

1. Compile (``plan_search.compile_chunk``), timed: ``compile_s``; with JAX's persistent cache
   a second job of the same size bucket loads the program instead (``compile_s`` ~ 0.1 s).
   The compile is inside the budget: the search gets what is left.
2. One chunk at ``T = 0`` from the seeds (a descent); its uphill proposal deltas give the
   temperature unit ``delta_q`` (their 10 % quantile, per cap), as ``sajax.anneal`` measures it.
3. Chunks at ``T = delta_q * t_start * (t_end / t_start) ** progress``; progress is the share
   of the search time used (with a budget) or of the steps run (without one).

Returns the chains' best orders and a ``SearchStats`` (chains, steps, orders scored, seconds).

    cand, stats = anneal_plan(energy, cp, fin_models, init, data, n_valid, config, deadline, key)
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sajax import plan_search as ps

DEFAULT_PROPOSALS = 2
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sajax-compile")


class SearchStats(NamedTuple):
    chains: int  # chains in all (every finalist cap)
    steps: int  # steps per chain
    proposals: int  # proposals per chain and step
    orders_scored: int  # chains x steps x proposals (every one scored exactly)
    compile_s: float  # compiling (or loading) the chunk program
    search_s: float  # running the chunks
    stop_reason: str  # "steps" | "time_budget"


def auto_chains(n: int, backend: str | None = None, cores: int | None = None) -> int:
    """Chains in all for ``--chains auto``: a CPU gets a batch that keeps its cores busy
    without starving each chain of steps (64-256, fewer for long orders); a GPU thousands."""
    import os

    backend = backend or jax.default_backend()
    n = max(int(n), 1)
    if backend in ("gpu", "cuda", "rocm", "tpu"):
        return int(np.clip(1 << int(np.log2(max(2**22 // n, 1))), 512, 8192))
    cores = cores or os.cpu_count() or 1
    per_core = np.clip(1 << int(np.log2(max(16_384 // n, 1))), 16, 128)
    return int(np.clip(per_core * min(cores, 4) // 2, 64, 256))


def block_for(n: int) -> int:
    """Positions between checkpoints: a power of two near sqrt(n), 8..64."""
    return int(np.clip(1 << int(round(np.log2(max(np.sqrt(n), 1)))), 8, 64))


def anneal_plan(
    energy,
    problem,
    models,
    init: np.ndarray,
    params,
    n_valid: int,
    config,
    deadline: float | None,
    key,
    steps: int,
    per_cap: int,
    proposals: int = DEFAULT_PROPOSALS,
    probs: np.ndarray | None = None,
    programs=None,
) -> tuple[np.ndarray, np.ndarray, SearchStats]:
    """Anneal ``init`` ((F, S, N) start orders per finalist) with ``per_cap`` chains per cap.

    ``energy`` is the planner's ``PlanEnergy`` (objective, slot buffer, KV check); ``models``
    the (F,) finalists' models. Stops after ``steps`` steps per chain or at ``deadline``
    (``time.perf_counter()`` seconds; the compile counts). Returns the chains' best orders
    (F, per_cap, N), their energies (F, per_cap) and the stats.
    """
    t0 = time.perf_counter()
    f_caps, _, n = init.shape
    c = f_caps * per_cap
    starts = np.concatenate([np.resize(np.arange(init.shape[1]), per_cap) for _ in range(f_caps)])
    groups = np.repeat(np.arange(f_caps), per_cap)
    orders = init[groups, starts].astype(np.int32)
    chain_models = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[groups]), models)
    spec = search_spec(energy, c, proposals, n)
    problem = ps.as_arrays(problem)
    params = ps.as_arrays(params)
    if probs is None:
        probs = ps.move_probs(
            config.swap, config.insert, config.reverse, config.hit_in, config.hit_swap
        )
    block_p = jnp.asarray(ps.block_weights(n, n_valid, spec.block))
    nv = jnp.int32(n_valid)
    offset = jnp.float32(0.0)
    length = config.chunk_size
    if programs is None:
        programs = start_compile(spec, n, length, problem, chain_models, params)
    if deadline is not None and not _ready(programs, deadline):
        # the budget ends before the programs are ready: the seeds are the plan (the compile
        # goes on in its thread and fills JAX's persistent cache for the next job)
        best = init[:, :1].repeat(per_cap, axis=1)
        return (
            best,
            np.full(best.shape[:2], np.inf),
            SearchStats(c, 0, proposals, 0, time.perf_counter() - t0, 0.0, "time_budget"),
        )
    init_fn, fn, compile_s = programs.result()
    state = init_fn(jnp.asarray(orders), problem, chain_models, params, offset)
    temps0 = jnp.zeros((length, c), jnp.float32)
    probs = jnp.asarray(probs, jnp.float32)
    t_search = time.perf_counter()
    done, stop, unit = 0, "steps", None
    chunk_s = 0.0
    k = 0
    while done < steps:
        now = time.perf_counter()
        if deadline is not None and now + chunk_s >= deadline:
            stop = "time_budget"
            break
        if unit is None:
            temps = temps0
        else:
            if deadline is None:
                progress = done / max(steps, 1)
            else:
                progress = (now - t_search) / max(deadline - t_search, 1e-9)
            frac = np.clip(progress + np.arange(length) / max(steps, 1), 0.0, 1.0)
            t = config.t_start * (config.t_end / config.t_start) ** frac
            temps = jnp.asarray(t[:, None] * unit[None, :], jnp.float32)
        kk = jax.random.fold_in(key, k)
        state, info = fn(
            state, kk, temps, probs, block_p, nv, problem, chain_models, params, offset
        )
        if unit is None:
            unit = _temperature_unit(np.asarray(info.deltas), groups, f_caps)
        jax.block_until_ready(state.best_energy)
        chunk_s = time.perf_counter() - now
        done += length
        k += 1
    best = np.asarray(state.best_perm).reshape(f_caps, per_cap, n)
    best_e = np.asarray(state.best_energy).reshape(f_caps, per_cap)
    end = time.perf_counter()
    stats = SearchStats(c, done, proposals, done * c * proposals, compile_s, end - t_search, stop)
    del t0
    return best, best_e, stats


def search_spec(energy, chains: int, proposals: int, n: int) -> ps.SearchSpec:
    """The search program's static settings for the planner's ``PlanEnergy``."""
    return ps.SearchSpec(
        energy.objective, energy.kv, energy.max_slots, chains, proposals, block_for(n)
    )


def start_compile(spec, n, length, problem, models, params) -> Future:
    """Compile the search programs in a thread (``plan_search.compile_programs``); the
    future's result is (init_fn, chunk_fn, seconds)."""
    args = (spec, n, length, problem, models, params)
    return _POOL.submit(ps.compile_programs, *args)


def prepare(energy, cp, model, finalists: int, config, n_real: int) -> Future:
    """Start compiling the programs ``batched_search`` will run (shapes only), so that the
    compile overlaps the seeds."""
    from sajax.objectives.slo import objective_params

    per_cap = resolve_chains(config.chains, n_real, finalists)
    n = int(np.shape(cp.mask)[0])
    models = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (finalists * per_cap,)), model)
    spec = search_spec(energy, finalists * per_cap, config.proposals, n)
    return start_compile(spec, n, config.chunk_size, cp, models, objective_params(0.0))


def _ready(programs: Future, deadline: float) -> bool:
    """Wait for the compile until ``deadline``; whether it finished."""
    try:
        programs.result(timeout=max(deadline - time.perf_counter(), 0.0))
    except TimeoutError:
        return False
    return True


def _temperature_unit(deltas: np.ndarray, groups: np.ndarray, f_caps: int) -> np.ndarray:
    """(C,) per chain: the 10 % quantile of the uphill deltas its cap's chains proposed."""
    unit = np.zeros(f_caps)
    for f in range(f_caps):
        d = deltas[:, groups == f].ravel()
        up = d[np.isfinite(d) & (d > 0)]
        unit[f] = np.quantile(up, 0.1) if len(up) else 1e-6
    return unit[groups]


def resolve_chains(chains, n: int, finalists: int) -> int:
    """Chains per cap: ``chains`` itself, or for ``"auto"`` ``auto_chains(n)`` shared by the
    finalist caps."""
    if chains == "auto":
        return max(1, auto_chains(n) // max(finalists, 1))
    return int(chains)


def batched_search(search, cp, fin_models, init, data, n_real, config, started, key, programs=None):
    """The planner's annealing stage with ``anneal_plan`` (``PlanConfig.search == "batched"``):
    within what is left of the budget less the descent's share, or ``config.steps`` (default
    ``planner.DEFAULT_STEPS``) steps. Returns (chains' best orders (F, C, N), steps, stop
    reason, summary stats)."""
    from sajax.planner.config import BUDGET_STEPS, DEFAULT_STEPS, _finish_reserve

    per_cap = resolve_chains(config.chains, n_real, init.shape[0])
    deadline = None
    steps = DEFAULT_STEPS if config.steps is None else config.steps
    if config.time_budget_s is not None:
        left = started + config.time_budget_s - time.perf_counter() - _finish_reserve(config)
        deadline = time.perf_counter() + left * (1.0 - config.descent_share)
        steps = BUDGET_STEPS if config.steps is None else config.steps
        if left <= 0:
            return init[:, :1], 0, "time_budget", {"chains": per_cap * init.shape[0]}
    if steps <= 0:
        return init[:, :1], 0, "no_search", {"chains": per_cap * init.shape[0]}
    best, _, st = anneal_plan(
        search,
        data.problem,
        fin_models,
        init,
        data.params,
        n_real,
        config,
        deadline,
        key,
        steps,
        per_cap,
        config.proposals,
        programs=programs,
    )
    stats = dict(
        chains=st.chains,
        compile_s=st.compile_s,
        search_s=st.search_s,
        orders_scored=st.orders_scored,
    )
    return best, st.steps, st.stop_reason, stats
