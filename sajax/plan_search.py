"""The planner's annealing: many chains over (order, cap), moves scored exactly and incrementally.

Every chain holds an order, its exact energy under the fast model (``sajax.simulate``) at the
chain's in-flight cap, the model's cache along the order (``sajax.sim_incremental``) and which
positions are predicted hits. A step, for all chains at once:

1. draws ONE start block ``b`` for the whole batch (probability proportional to the uniform
   position pairs whose lower position lies in it), then per chain ``K`` proposals whose lower
   position lies in block ``b`` (``draw_moves``): swap / insert / reverse of a uniform pair (as
   ``sajax.moves``), ``hit_in`` (a predicted miss later in the order is inserted at the
   position: it enters the hit region, the hits behind it move back one) and ``hit_swap`` (a
   predicted hit in the block trades places with a later miss);
2. scores every proposal exactly by re-running the scan from block ``b``'s checkpoint
   (``score_from_block``: the loop is shared, so it runs ``n_blocks - b`` blocks);
3. takes the first proposal that passes its Metropolis test (sequential Metropolis), and keeps
   the lowest-energy proposal seen as the chain's best.

Everything that varies between plans of one size bucket is data: the chains' caps (the
model's ``slots``), temperatures, move mix, block weights, ``n_valid``. So a plan compiles
``run_chunk`` once per (bucket, chains, proposals, chunk, slot buffer, KV check, objective), and
JAX's persistent cache (``batch_runner.planning.enable_compilation_cache``) lets a second job
of the bucket load it. ``compile_chunk`` does that ahead of time and reports its seconds.

    search = SearchSpec(objective="goodput", kv=False, s_max=128, chains=64, proposals=2)
    fn, compile_s = compile_chunk(search, problem, models, params, steps=16)
    state = init_state(search, orders, problem, models, params)
    state, info = fn(state, key, temps, probs, block_p, n_valid, problem, models, params)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sajax.kernel import metropolis_accept
from sajax.moves import INSERT, SWAP, apply_move
from sajax.objectives.slo import get_objective, soft_met
from sajax.sim_incremental import DEFAULT_BLOCK, SimCache, init_cache, n_blocks, score_from_block
from sajax.simulate import _Carry, _Sched

HIT_IN = 3
HIT_SWAP = 4
SEARCH_MOVES = ("swap", "insert", "reverse", "hit_in", "hit_swap")


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """The static settings of the search program (one compile per value and size bucket)."""

    objective: str = "goodput"
    kv: bool = False  # KV-capacity check in the simulation
    s_max: int = 128  # static slot buffer (>= every chain's cap)
    chains: int = 64  # chains in all (over every cap)
    proposals: int = 2  # proposals per chain and step
    block: int = DEFAULT_BLOCK  # positions between checkpoints


class SearchState(NamedTuple):
    perm: jax.Array  # (C, N) int32
    energy: jax.Array  # (C,) float32, exact
    hit: jax.Array  # (C, N) bool, by position: predicted to meet its SLO
    cache: SimCache  # (C, ...)
    best_perm: jax.Array  # (C, N)
    best_energy: jax.Array  # (C,)


class ChunkInfo(NamedTuple):
    deltas: jax.Array  # (L, C, K) float32, proposed minus current energy
    accepted: jax.Array  # (L, C) bool
    sequential: jax.Array  # (L, C) int32, sequential Metropolis steps each step stood for


def move_probs(swap=0.3, insert=0.5, reverse=0.2, hit_in=0.0, hit_swap=0.0) -> np.ndarray:
    """(5,) float32 probabilities of the search's moves (``SEARCH_MOVES``) from weights >= 0."""
    w = np.array([swap, insert, reverse, hit_in, hit_swap], np.float64)
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"move weights must be finite, >= 0 and not all 0; got {w}")
    return (w / w.sum()).astype(np.float32)


def block_weights(n: int, n_valid: int, block: int) -> np.ndarray:
    """(n_blocks,) float32: the share of uniform position pairs (lo < hi < n_valid) whose ``lo``
    lies in each block (the law that makes a drawn pair uniform)."""
    lo = np.arange(n_blocks(n, block) * block)
    pairs = np.maximum(n_valid - 1 - lo, 0).astype(np.float64)
    w = pairs.reshape(-1, block).sum(axis=1)
    if w.sum() <= 0:
        raise ValueError(f"need n_valid >= 2 to draw a move, got {n_valid}")
    return (w / w.sum()).astype(np.float32)


def _kth_true(mask, u):
    """A uniformly drawn index where ``mask`` holds (by ``u`` in [0, 1)); (index, any)."""
    count = jnp.sum(mask)
    r = jnp.minimum((u * count).astype(jnp.int32), jnp.maximum(count - 1, 0))
    idx = jnp.searchsorted(jnp.cumsum(mask), r + 1, side="left").astype(jnp.int32)
    return jnp.minimum(idx, mask.shape[0] - 1), count > 0


def draw_moves(u, b, hit, n_valid, probs, block: int):
    """(kind, i, j) of one proposal with ``min(i, j)`` in block ``b``; ``u``: (5,) uniforms.

    Pairs: ``lo`` in the block with weight ``n_valid - 1 - lo`` and ``hi`` uniform above it, in
    either direction (a uniform pair overall, with ``block_weights``). ``hit_in``: ``lo``
    uniform in the block, a uniform miss after it moves there (none: a plain insert).
    ``hit_swap``: a uniform hit of the block (none: any position) swaps with a later miss.
    """
    n = hit.shape[0]
    kind = jnp.sum(u[0] >= jnp.cumsum(probs)[:-1]).astype(jnp.int32)
    lanes = b * block + jnp.arange(block, dtype=jnp.int32)
    room = jnp.maximum(n_valid - 1 - lanes, 0).astype(jnp.float32)
    cdf = jnp.cumsum(room)
    pick = jnp.searchsorted(cdf, u[1] * cdf[-1], side="right")
    lo_pair = lanes[jnp.minimum(pick, block - 1)]
    span = jnp.maximum(n_valid - 1 - lo_pair, 1)
    hi_pair = lo_pair + 1 + jnp.minimum((u[2] * span).astype(jnp.int32), span - 1)
    flip = u[3] < 0.5
    i_pair, j_pair = jnp.where(flip, hi_pair, lo_pair), jnp.where(flip, lo_pair, hi_pair)

    pos = jnp.arange(n, dtype=jnp.int32)
    valid_lane = room > 0
    in_block = (pos >= b * block) & (pos < (b + 1) * block) & (pos < n_valid - 1)
    hit_lanes = in_block & hit
    lo_any = lanes[
        jnp.minimum((u[1] * jnp.maximum(jnp.sum(valid_lane), 1)).astype(jnp.int32), block - 1)
    ]
    lo_hit, some_hit = _kth_true(hit_lanes, u[1])
    lo_t = jnp.where((kind == HIT_SWAP) & some_hit, lo_hit, lo_any)
    miss, some_miss = _kth_true((~hit) & (pos > lo_t) & (pos < n_valid), u[2])
    targeted = (kind >= HIT_IN) & some_miss
    plain = jnp.where(kind == HIT_IN, INSERT, jnp.where(kind == HIT_SWAP, SWAP, kind))
    kind_out = jnp.where(targeted, jnp.where(kind == HIT_IN, INSERT, SWAP), plain)
    i = jnp.where(targeted, jnp.where(kind == HIT_IN, miss, lo_t), i_pair)
    j = jnp.where(targeted, jnp.where(kind == HIT_IN, lo_t, miss), j_pair)
    return kind_out.astype(jnp.int32), i, j


def _energies(spec: SearchSpec, perms, t, problem, params, offset):
    """(P,) energies and (P, N) hit flags by position of the timings ``t`` of ``perms``."""
    fn = get_objective(spec.objective)

    def one(perm, first, finish):
        e = fn(first + offset, finish + offset, problem, params)
        met, _ = soft_met(first + offset, finish + offset, problem, 0.0)
        return jnp.asarray(e, jnp.float32), (met > 0.5)[perm]

    return jax.vmap(one)(perms, t.first_token_ms, t.finish_ms)


def init_state(spec: SearchSpec, orders, problem, models, params, offset=0.0) -> SearchState:
    """The state of chains starting at ``orders`` ((C, N)), chain c at cap ``models.slots[c]``."""
    orders = jnp.asarray(orders, jnp.int32)
    return _init_jit(spec, orders, problem, models, params, jnp.float32(offset))


@functools.partial(jax.jit, static_argnums=0)
def _init_jit(spec, orders, problem, models, params, offset):
    def one(order, model):
        return init_cache(order, problem, model, spec.s_max, spec.kv, spec.block)

    cache = jax.vmap(one)(orders, models)
    t = score_from_block(
        jnp.int32(0), orders, cache, problem, models, spec.s_max, spec.kv, spec.block
    )[0]
    energy, hit = _energies(spec, orders, t, problem, params, offset)
    return SearchState(orders, energy, hit, cache, orders, energy)


def _step(
    spec: SearchSpec, state, key, temps, probs, block_p, n_valid, problem, models, params, offset
):
    c, k = spec.chains, spec.proposals
    kb, ku = jax.random.split(key)
    b = jax.random.categorical(kb, jnp.log(block_p)).astype(jnp.int32)
    u = jax.random.uniform(ku, (c, k, 6))
    draw = jax.vmap(
        jax.vmap(draw_moves, in_axes=(0, None, None, None, None, None)),
        in_axes=(0, None, 0, None, None, None),
    )
    kind, i, j = draw(u[..., :5], b, state.hit, n_valid, probs, spec.block)
    moved = jax.vmap(jax.vmap(apply_move, in_axes=(None, 0, 0, 0)))(state.perm, kind, i, j)
    flat = moved.reshape(c * k, -1)
    rep = lambda x: jnp.repeat(x, k, axis=0)  # noqa: E731
    t, caches = score_from_block(
        b,
        flat,
        jax.tree.map(rep, state.cache),
        problem,
        jax.tree.map(rep, models),
        spec.s_max,
        spec.kv,
        spec.block,
    )
    energy, hit = _energies(spec, flat, t, problem, params, offset)
    energy, hit = energy.reshape(c, k), hit.reshape(c, k, -1)
    passed = metropolis_accept(u[..., 5], state.energy[:, None], energy, temps[:, None])
    first = jnp.argmax(passed, axis=1)
    accepted = jnp.take_along_axis(passed, first[:, None], 1)[:, 0]
    rows = jnp.arange(c) * k + first

    def take(old, new_flat):
        new = new_flat[rows]
        mask = accepted.reshape((c,) + (1,) * (new.ndim - 1))
        return jnp.where(mask, new, old)

    best_k = jnp.argmin(jnp.where(jnp.isnan(energy), jnp.inf, energy), axis=1)
    best_e = jnp.take_along_axis(energy, best_k[:, None], 1)[:, 0]
    improved = best_e < state.best_energy
    best_perm = moved[jnp.arange(c), best_k]
    new = SearchState(
        perm=take(state.perm, flat),
        energy=take(state.energy, energy.reshape(-1)),
        hit=take(state.hit, hit.reshape(c * k, -1)),
        cache=jax.tree.map(take, state.cache, caches),
        best_perm=jnp.where(improved[:, None], best_perm, state.best_perm),
        best_energy=jnp.where(improved, best_e, state.best_energy),
    )
    sequential = jnp.where(accepted, first + 1, k).astype(jnp.int32)
    return new, (energy - state.energy[:, None], accepted, sequential)


def _chunk(spec, state, key, temps, probs, block_p, n_valid, problem, models, params, offset):
    keys = jax.random.split(key, temps.shape[0])

    def body(s, x):
        kk, tt = x
        return _step(spec, s, kk, tt, probs, block_p, n_valid, problem, models, params, offset)

    state, (d, a, q) = jax.lax.scan(body, state, (keys, temps))
    return state, ChunkInfo(d, a, q)


run_chunk = jax.jit(_chunk, static_argnums=0, donate_argnums=1)


def compile_programs(spec: SearchSpec, n: int, length: int, problem, models, params):
    """AOT-compiled ``(init, chunk)`` programs for ``spec`` at bucket size ``n`` and ``length``
    steps per chunk, from shapes only (so it can run in a thread while the seeds are built);
    JAX's persistent cache serves a program it holds. Returns (init_fn, chunk_fn, seconds)."""
    t0 = time.perf_counter()
    sds = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.asarray(x).dtype)  # noqa: E731
    problem, models, params = (jax.tree.map(sds, x) for x in (problem, models, params))
    key = (
        spec,
        n,
        length,
        str(jax.tree.map(lambda x: (x.shape, x.dtype), (problem, models, params))),
    )
    if key in _PROGRAMS:  # compiled before in this process
        return (*_PROGRAMS[key], time.perf_counter() - t0)
    orders = jax.ShapeDtypeStruct((spec.chains, n), jnp.int32)
    offset = jax.ShapeDtypeStruct((), jnp.float32)
    init_args = (orders, problem, models, params, offset)
    folder = _export_folder()
    init_fn = None
    if folder is not None:
        try:
            init_fn, out_avals = _exported(
                folder, "init", functools.partial(_init_jit, spec), init_args, key, _STATE_TREE
            )
            state = jax.tree.unflatten(_STATE_TREE, out_avals)
        except ImportError:  # jax.export's serialization needs flatbuffers
            folder = None
    if init_fn is None:
        state = jax.eval_shape(functools.partial(_init_jit, spec), *init_args)
    chunk_args = (
        state,
        jax.eval_shape(lambda: jax.random.key(0)),
        jax.ShapeDtypeStruct((length, spec.chains), jnp.float32),
        jax.ShapeDtypeStruct((len(SEARCH_MOVES),), jnp.float32),
        jax.ShapeDtypeStruct((n_blocks(n, spec.block),), jnp.float32),
        jax.ShapeDtypeStruct((), jnp.int32),
        problem,
        models,
        params,
        offset,
    )
    if folder is None:
        init_fn = _init_jit.lower(spec, *init_args).compile()
        chunk_fn = run_chunk.lower(spec, *chunk_args).compile()
    else:
        chunk_tree = jax.tree.structure((state, ChunkInfo(0, 0, 0)))
        chunk_fn, _ = _exported(
            folder, "chunk", functools.partial(_chunk, spec), chunk_args, key, chunk_tree
        )
    _PROGRAMS[key] = (init_fn, chunk_fn)
    return init_fn, chunk_fn, time.perf_counter() - t0


_PROGRAMS: dict = {}  # compiled (init, chunk) programs of this process, by spec and shapes
# the modules whose code the programs are made of: a change of any makes new exports
_SOURCES = (
    "plan_search",
    "sim_incremental",
    "simulate",
    "objectives/slo",
    "metrics",
    "moves",
    "kernel",
)


def _export_folder() -> Path | None:
    """Where serialized programs are kept: next to JAX's persistent cache (None: not kept)."""
    cache = jax.config.jax_compilation_cache_dir
    return Path(cache) / "sajax-search" if cache else None


def _state_tree():
    carry = _Carry(*[0] * len(_Carry._fields))
    cache = SimCache(_Sched(*[0] * len(_Sched._fields)), carry, carry)
    return jax.tree.structure(SearchState(0, 0, 0, cache, 0, 0))


def _exported(folder: Path, name: str, fn, args, key, out_tree):
    """``fn(*args)`` compiled through ``jax.export``, its serialized form kept in ``folder``:
    a later process deserializes it instead of tracing and lowering it again (seconds on a
    small CPU), and JAX's persistent cache serves its compiled form."""
    import hashlib

    root = Path(__file__).resolve().parent
    code = b"".join((root / f"{m}.py").read_bytes() for m in _SOURCES)
    digest = hashlib.sha256(repr((name, key, jax.__version__)).encode() + code).hexdigest()
    path = folder / f"{name}-{digest[:24]}.bin"
    leaves, in_tree = jax.tree.flatten(args)
    is_key = [jnp.issubdtype(x.dtype, jax.dtypes.prng_key) for x in leaves]
    flat_in = [
        jax.eval_shape(jax.random.key_data, x) if k else x
        for x, k in zip(leaves, is_key, strict=True)
    ]

    def flat(*xs):
        xs = [jax.random.wrap_key_data(x) if k else x for x, k in zip(xs, is_key, strict=True)]
        return jax.tree.leaves(fn(*jax.tree.unflatten(in_tree, xs)))

    exp = None
    if path.exists():
        try:
            exp = jax.export.deserialize(bytearray(path.read_bytes()))
        except Exception:  # noqa: BLE001 - a damaged or foreign file: export again
            exp = None
    if exp is None:
        exp = jax.export.export(jax.jit(flat))(*flat_in)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(exp.serialize())
            tmp.replace(path)
        except OSError:
            pass  # not kept: the next process exports again
    compiled = jax.jit(exp.call).lower(*flat_in).compile()

    def call(*a):
        xs = jax.tree.leaves(a)
        xs = [jax.random.key_data(x) if k else x for x, k in zip(xs, is_key, strict=True)]
        return jax.tree.unflatten(out_tree, compiled(*xs))

    out_avals = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in exp.out_avals]
    return call, out_avals


def compile_chunk(
    spec, state, key, temps, probs, block_p, n_valid, problem, models, params, offset=0.0
):
    """The compiled chunk for these shapes (ahead of time; from JAX's persistent cache when it
    holds it) and the seconds it took."""
    t0 = time.perf_counter()
    args = (
        state,
        key,
        temps,
        probs,
        block_p,
        n_valid,
        problem,
        models,
        params,
        jnp.float32(offset),
    )
    compiled = run_chunk.lower(spec, *args).compile()
    return compiled, time.perf_counter() - t0


def as_arrays(tree: Any):
    """Every leaf as a JAX array (a stable signature for the compiled chunk)."""
    return jax.tree.map(jnp.asarray, tree)


_STATE_TREE = _state_tree()
