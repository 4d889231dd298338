"""The joint annealer over replicas: which replica serves each request, and in which order.

State. A window of ``W`` requests spread over ``R`` replicas is one permutation of ``P = R * L``
positions: position ``p`` belongs to replica ``p // L`` and the requests a replica serves are,
in submission order, the real items among its ``L`` positions. The other ``P - W`` items are
dummies (``mask == False``), which take no slot and no time in ``sajax.simulate``. So "an order
plus a replica per position" is an ordinary permutation, and the annealer's ordinary moves
(``sajax.anneal``: swap, insert, reversal) are the moves between replicas too: a swap of a
request with a dummy moves it to another replica, at that position; an insert reorders one
replica and shifts the items between to the neighbouring positions (and, at a boundary, to the
neighbouring replica). ``L = ceil(slack * max requests per replica)`` leaves every replica room
to take more than its share.

Energy. Each replica's ``L`` items are gathered into a sub-problem and simulated by the fast
model with that replica's own ``EngineModel`` (``vmap`` over replicas: replicas may differ in
speed and slots); a replica's times are shifted by its ``offset`` (ms); the objective
(``sajax.objectives.slo``: ``-G``, attainment or tardiness) is taken over all replicas' rows
together::

    E(perm) = objective( concat_r [offset_r + simulate(items_r, problem, model_r)] )

Windows (large jobs). A job of more than ``window`` requests is cut into windows by position:
window k holds the k-th of K equal slices of every replica's current order. A window is
annealed with the rest fixed; it starts on replica r at ``offset_r``, calibrated so that its
first slots' predicted finish times match the whole plan's (the window alone starts on an
empty engine; the real one is full of the slice before). With the ``goodput`` objective a
window scores the linear form ``-(hits_w - G_ref * t_w) / n_w`` (``goodput_window``, as
``sajax.decompose`` does), ``G_ref`` the starting plan's G. Windows run in order, the offsets
refreshed from the whole plan after each one (``refresh=False``: from the starting plan only,
for very large jobs). The whole plan is re-scored exactly by the caller.

    orders = joint_anneal(problem, models, orders, key, objective="goodput", window=2048)
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sajax.anneal import anneal
from sajax.engine_model import EngineModel
from sajax.objectives.slo import ObjectiveParams, get_objective, objective_params
from sajax.problem import Problem
from sajax.simulate import simulate


def stack_models(models: Sequence[EngineModel]) -> EngineModel:
    """One ``EngineModel`` whose fields have a leading replica axis (for ``vmap``)."""
    fields = zip(*models, strict=True)
    return EngineModel(*(np.stack([np.asarray(x) for x in field]) for field in fields))


def max_slots_of(models: Sequence[EngineModel], n: int) -> int:
    """The static slot-buffer length for ``simulate``: the largest slots, as a power of two."""
    s = max(int(m.slots) for m in models)
    return max(1, min(1 << (max(s, 1) - 1).bit_length(), max(n, 1)))


def _window_times(perm, problem: Problem, models: EngineModel, offsets, r: int, max_slots: int):
    """(R, L) first-token and finish times (ms, offsets added) and the (R, L) sub-problems."""
    idx = perm.reshape(r, -1)
    ell = idx.shape[1]

    def one(ix, model, off):
        sub = Problem(*(jnp.asarray(x)[ix] for x in problem))
        t = simulate(jnp.arange(ell, dtype=jnp.int32), sub, model, max_slots=max_slots, kv=False)
        return t.first_token_ms + off, t.finish_ms + off, sub

    return jax.vmap(one)(idx, models, offsets)


def _energy(perm, data, *, r: int, max_slots: int, objective: str):
    problem, models, offsets, params = data
    first, finish, sub = _window_times(perm, problem, models, offsets, r, max_slots)
    flat = Problem(*(x.reshape(-1) for x in sub))
    return get_objective(objective)(first.reshape(-1), finish.reshape(-1), flat, params)


_energy_jit = jax.jit(_energy, static_argnames=("r", "max_slots", "objective"))


@functools.cache
def _energy_fn(r: int, max_slots: int, objective: str):
    """One energy function per shape, so that ``sajax.anneal`` reuses its compiled chunks."""
    return functools.partial(_energy, r=r, max_slots=max_slots, objective=objective)


@functools.partial(jax.jit, static_argnames=("r", "max_slots"))
def _times_jit(perm, problem, models, offsets, *, r: int, max_slots: int):
    first, finish, _ = _window_times(perm, problem, models, offsets, r, max_slots)
    return first, finish


def _pad_problem(problem: Problem, rows: np.ndarray, size: int) -> Problem:
    """Rows ``rows`` of ``problem`` as items 0..len-1, then dummies up to ``size``."""
    pad = size - len(rows)
    fills = (1, 1, np.inf, np.inf, np.inf, 0.0, False)
    dtypes = (np.int32, np.int32, np.float32, np.float32, np.float32, np.float32, bool)
    return Problem(
        *(
            np.concatenate([np.asarray(x)[rows].astype(dt), np.full(pad, f, dt)])
            for x, f, dt in zip(problem, fills, dtypes, strict=True)
        )
    )


def encode(chunks: Sequence[np.ndarray], ell: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, perm): the window's rows (item i = rows[i]) and its permutation of R * ell."""
    rows = np.concatenate([np.asarray(c, np.int64) for c in chunks])
    w = len(rows)
    perm = np.empty(len(chunks) * ell, np.int32)
    dummy = w
    start = 0
    for k, c in enumerate(chunks):
        m = len(c)
        perm[k * ell : k * ell + m] = np.arange(start, start + m)
        perm[k * ell + m : (k + 1) * ell] = np.arange(dummy, dummy + ell - m)
        start += m
        dummy += ell - m
    return rows, perm


def decode(perm: np.ndarray, rows: np.ndarray, r: int) -> list[np.ndarray]:
    """Per replica, the window's rows in submission order (dummies dropped)."""
    idx = np.asarray(perm).reshape(r, -1)
    w = len(rows)
    return [rows[ix[ix < w]] for ix in idx]


def joint_anneal(
    problem: Problem,
    models: Sequence[EngineModel],
    orders: Sequence[np.ndarray],
    key: jax.Array,
    *,
    objective: str = "goodput",
    window: int = 2048,
    slack: float = 1.5,
    chains: int = 4,
    steps: int = 1_000,
    time_budget_s: float | None = None,
    params: ObjectiveParams | None = None,
    whole_times: Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]] | None = None,
    refresh: bool = True,
) -> tuple[list[np.ndarray], dict]:
    """Anneal the assignment and order of ``orders`` (per replica, rows of ``problem``).

    ``whole_times(orders) -> (first_ms, finish_ms)`` (by row) scores the whole plan; it sets the
    window offsets (needed when there is more than one window). Returns the new per-replica
    orders and a summary (windows, steps, energies before/after per window).
    """
    started = time.perf_counter()
    r = len(models)
    orders = [np.asarray(o, np.int64) for o in orders]
    n = sum(len(o) for o in orders)
    k = max(1, math.ceil(n / max(1, window)))
    if k > 1 and whole_times is None:
        raise ValueError("windows need whole_times to set their offsets")
    slices = [np.array_split(o, k) for o in orders]
    ell = max(1, math.ceil(slack * max(len(s) for sl in slices for s in sl)))
    size = r * ell
    stacked = stack_models(models)
    max_slots = max_slots_of(models, ell)
    params = params or objective_params()
    first_full = finish_full = None
    if k > 1:
        first_full, finish_full = whole_times(orders)
        if objective in ("goodput", "g", "G"):
            # windows score the linear form of G against the whole plan's G (as sajax.decompose
            # does): a window's own ratio G would trade hits for latency at the wrong rate
            objective = "goodput_window"
            params = params._replace(g_ref=np.float32(_whole_g(first_full, finish_full, problem)))
    energy = _energy_fn(r, max_slots, objective)
    info = {"windows": k, "positions": size, "steps": 0, "improved": 0, "energy_before": 0.0}
    info["energy_after"] = 0.0
    info["objective"] = objective
    for w in range(k):
        if time_budget_s is not None:
            left = time_budget_s - (time.perf_counter() - started)
            if left <= 0:
                break
            budget = left / (k - w)
        else:
            budget = None
        chunks = [sl[w] for sl in slices]
        if sum(len(c) for c in chunks) < 2:
            continue
        rows, perm0 = encode(chunks, ell)
        sub = _pad_problem(problem, rows, size)
        offsets = np.zeros(r, np.float32)
        if k > 1:
            offsets = _offsets(perm0, rows, sub, stacked, finish_full, chunks, models, max_slots)
        data = (sub, stacked, offsets, params)
        e0 = float(
            _energy_jit(jnp.asarray(perm0), data, r=r, max_slots=max_slots, objective=objective)
        )
        res = anneal(
            energy,
            jax.random.fold_in(key, w),
            n=size,
            chains=chains,
            steps=steps,
            data=data,
            init_perms=np.broadcast_to(perm0, (chains, size)),
            chunk_size=16,
            time_budget_s=budget,
        )
        e1 = float(res.best_energy)
        info["steps"] += int(res.steps)
        info["energy_before"] += e0
        if e1 < e0:
            new = decode(np.asarray(res.best_perm), rows, r)
            for j in range(r):
                slices[j][w] = new[j]
            info["improved"] += 1
            info["energy_after"] += e1
            if k > 1 and refresh and w + 1 < k:
                first_full, finish_full = whole_times([np.concatenate(sl) for sl in slices])
        else:
            info["energy_after"] += e0
    info["time_s"] = time.perf_counter() - started
    del first_full
    return [np.concatenate(sl).astype(np.int64) for sl in slices], info


def _whole_g(first, finish, problem: Problem) -> float:
    from sajax.metrics import goodput, problem_metrics

    p = Problem(*(np.asarray(x) for x in problem))
    live = np.isfinite(finish) & np.asarray(p.mask, bool)
    m = problem_metrics(first, finish, p)
    return float(goodput(m.met[live], m.has_slo[live], finish[live], p.weight[live]))


def _offsets(perm0, rows, sub, stacked, finish_full, chunks, models, max_slots) -> np.ndarray:
    """Per replica: mean gap between the whole plan's finish times and the window-alone ones
    over the window's first ``slots`` requests on it (>= 0)."""
    r = len(chunks)
    zero = np.zeros(r, np.float32)
    _, finish = _times_jit(jnp.asarray(perm0), sub, stacked, zero, r=r, max_slots=max_slots)
    finish = np.asarray(finish)
    out = np.zeros(r, np.float32)
    for j, c in enumerate(chunks):
        m = min(len(c), max(1, int(models[j].slots)))
        if m == 0 or len(c) == 0:
            continue
        gap = np.asarray(finish_full)[c[:m]] - finish[j, :m]
        out[j] = max(0.0, float(np.mean(gap)))
    return out
