"""The fast engine model: ``simulate(order, problem, model) -> Timings``, jittable and vmappable.

It predicts what ``sajax.refsim`` computes iteration by iteration, without a loop over
iterations. Everything is counted in *iteration units* first, then turned into milliseconds.

**Admission (a ``lax.scan`` over positions).** The carry is a small sorted vector of the slots'
release iterations (``max_slots`` long; slots beyond ``model.slots`` never free), with the KV
tokens each one reserves. Request ``k`` (submitted ``k``-th) is admitted at the first iteration
``s_k >= s_{k-1}`` at which a slot is free and, with a KV capacity, its ``input + output`` tokens
fit next to the reservations of the slots still busy (FIFO: the head blocks the queue)::

    s_k = min { max(r_j, s_{k-1}) : slot j's release r_j, KV free at that time >= need_k }

**Prefill.** Prompts are prefilled in admission order through a pipeline that spends
``R_k = max(token_budget - d_k, 1)`` tokens per iteration, ``d_k`` being the sequences decoding at
``p_k``. Request ``k`` starts at ``p_k`` (``s_k``, or where the previous prompt left the pipeline,
using what is left of that iteration), takes a first chunk ``L0_k`` and then ``R_k`` per iteration,
and completes at ``f_k`` — its first-token iteration. It decodes one token per iteration after
that and finishes at ``e_k = f_k + out_k - 1``; its slot is free from ``e_k + 1``. With prompts
that fit the budget (the usual case) this is exactly the reference's schedule; longer or
contended prompts are approximate (``R_k`` is frozen at ``p_k``).

**Time.** Iteration ``t`` costs ``a + b * forward(t) + c * context(t) + d * sampled(t)``, so its
end is ``T(t) = a (t + 1) + sum_j G_j(t)`` where ``G_j`` is request ``j``'s share of the
cumulative ``b * forward + c * context + d * sampled`` up to ``t`` (``sampled``: the rows that
produce a token, from ``f_j`` on): zero before ``p_j``; a quadratic P1 while
its prompt is chunked (``[p_j, f_j)``, context grows by ``R_j`` per iteration); a quadratic P2
while decoding (``[f_j, e_j]``, context grows by one per step; it starts from the whole prompt's
cost); the constant P3 after ``e_j``. P2 and P3 are summed as coefficient changes of a
polynomial in ``t``: the scan yields their breakpoints as two sorted lists (first tokens ``f``,
and finishes in the order the slot buffer releases them), their merge is found by binary search
(no sort), and a cumulative sum in time order evaluates the sum at every request's ``f_k`` and
``e_k`` (each is an entry of the merge). Prefill windows are disjoint (one
pipeline), so P1 is added from the single window that contains the query, evaluated locally.
``first_token_ms = T(f_k)``, ``finish_ms = T(e_k)``.
Cost: ``O(N * max_slots)`` for the scan (``O(N * max_slots * log max_slots)`` with a KV
capacity) plus ``O(N log N)`` (the searches); no per-iteration work and no bound on the
iteration count.
Float32 throughout; against a float64 run the times agree to ~1e-5 relative even for jobs of
~10^6 iterations.

``max_slots`` (static) bounds ``model.slots``, which may be traced (vmapped over caps); by
default it is ``model.slots`` rounded up to a power of two when that is concrete, else
``min(N, 256)``. ``Timings.overflow`` is set when ``min(slots, N)`` exceeds it (results invalid).

    t = simulate(order, problem, model)                       # (N,) times by request row
    jax.jit(jax.vmap(simulate, in_axes=(0, None, None)))(orders, problem, model)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sajax.engine_model import EngineModel
from sajax.problem import Problem

DEFAULT_MAX_SLOTS = 256
_NEVER = np.int32(2**30)  # release iteration of a slot that never frees


class Timings(NamedTuple):
    first_token_ms: jax.Array  # (N,) float32, end of the first-token iteration, by row (0: padding)
    finish_ms: jax.Array  # (N,) float32, end of the last-token iteration, by row (0: padding)
    admit_iter: jax.Array  # (N,) int32, iteration at which the row is admitted
    first_iter: jax.Array  # (N,) int32, iteration that completes its prompt (first token)
    finish_iter: jax.Array  # (N,) int32, iteration of its last token
    n_iterations: jax.Array  # () int32, iterations of the whole job
    makespan_ms: jax.Array  # () float32, end of the last iteration
    overflow: jax.Array  # () bool, slots exceeded max_slots: the timings are not valid


class _Carry(NamedTuple):
    release: jax.Array  # (S,) int32, sorted: iteration from which each slot is free
    owner: jax.Array  # (S,) int32, position of the slot's last sequence (-1: none yet)
    first: jax.Array  # (S,) int32, first-token iteration of the slot's sequence
    reserved: jax.Array  # (S,) int32, KV tokens held by the slot's sequence until release
    admit: jax.Array  # () int32, admission iteration of the previous request
    pf_iter: jax.Array  # () int32, last iteration the prefill pipeline has used
    pf_used: jax.Array  # () int32, prefill tokens already placed in that iteration
    popped: jax.Array  # () int32, release iteration of the last entry taken off the buffer


class _Sched(NamedTuple):
    admit: jax.Array  # (N,) int32, by position
    start: jax.Array  # (N,) int32, first prefill iteration p (non-decreasing)
    first: jax.Array  # (N,) int32, f (non-decreasing)
    finish: jax.Array  # (N,) int32, e
    chunk0: jax.Array  # (N,) int32, first prompt chunk L0
    rate: jax.Array  # (N,) int32, prompt tokens per later prefill iteration R
    popped_at: jax.Array  # (N,) int32, release iteration taken off the buffer (non-decreasing)
    popped_owner: jax.Array  # (N,) int32, position whose slot that was (-1: none)


def _static_int(x) -> int | None:
    try:
        return int(np.max(np.asarray(x)))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def resolve_max_slots(model: EngineModel, n: int, max_slots: int | None = None) -> int:
    """The static slot-buffer length ``simulate`` uses (see the module docstring)."""
    if max_slots is not None:
        return max(1, min(int(max_slots), n))
    slots = _static_int(model.slots)
    if slots is None:
        return max(1, min(n, DEFAULT_MAX_SLOTS))
    return max(1, min(1 << (max(slots, 1) - 1).bit_length(), n))


def kv_can_bind(problem: Problem, model: EngineModel) -> bool:
    """False when the KV capacity can never block an admission (host-side, concrete inputs).

    That is when it is unlimited or holds the ``slots`` largest ``input + output`` at once;
    then ``simulate(..., kv=False)`` gives the same timings, faster.
    """
    cap = int(np.max(np.asarray(model.kv_capacity)))
    if cap <= 0:
        return False
    need = np.asarray(problem.input_len, np.int64) + np.asarray(problem.output_len, np.int64)
    need = np.sort(need[np.asarray(problem.mask, bool)])[::-1]
    return bool(need[: int(np.max(np.asarray(model.slots)))].sum() > cap)


def _first_fitting(c: _Carry, cand, need, kv_cap, slots):
    """The first buffer index whose candidate time leaves KV room for ``need`` tokens.

    Busy KV at time x = reservations of the entries still held (release > x). ``cand`` is
    non-decreasing, so busy is non-increasing along the buffer and a binary search over the
    ``slots`` real entries finds the first fit (the last one always fits: nothing is held
    after it). O(S log S) per request, no prefix sums.
    """

    def fits(j):
        busy = jnp.sum(jnp.where(c.release > cand[j], c.reserved, 0))
        return (kv_cap <= 0) | (busy + need <= kv_cap) | (busy == 0)

    lo, hi = jnp.int32(0), slots - 1
    for _ in range(max(1, int(c.release.shape[0] - 1).bit_length())):
        mid = (lo + hi) // 2
        ok = fits(mid)
        lo, hi = jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)
    return lo


def _init_carry(slots, max_slots: int) -> _Carry:
    """The scan's carry before the first position: ``slots`` free slots, an idle pipeline."""
    lane = jnp.arange(max_slots, dtype=jnp.int32)
    return _Carry(
        release=jnp.where(lane < slots, 0, _NEVER).astype(jnp.int32),
        owner=jnp.full(max_slots, -1, jnp.int32),
        first=jnp.where(lane < slots, 0, _NEVER).astype(jnp.int32),  # never: not decoding
        reserved=jnp.zeros(max_slots, jnp.int32),
        admit=jnp.int32(0),
        pf_iter=jnp.int32(-1),
        pf_used=jnp.int32(0),
        popped=jnp.int32(0),
    )


def _engine_consts(problem: Problem, model: EngineModel, n: int):
    """(slots, token budget, KV capacity) as int32 scalars, slots clipped to ``n``."""
    slots = jnp.minimum(jnp.asarray(model.slots, jnp.int32), n)
    budget = jnp.maximum(jnp.asarray(model.token_budget, jnp.int32), 1)
    return slots, budget, jnp.asarray(model.kv_capacity, jnp.int32)


def _by_position(order, problem: Problem):
    """(input, output, live) of each position of ``order`` (lengths clipped to >= 1)."""
    inp = jnp.maximum(jnp.asarray(problem.input_len, jnp.int32), 1)[order]
    out = jnp.maximum(jnp.asarray(problem.output_len, jnp.int32), 1)[order]
    return inp, out, jnp.asarray(problem.mask, bool)[order]


def _admit_fn(slots, budget, kv_cap, max_slots: int, use_kv: bool):
    """The scan body ``(carry, (position, input, output, live)) -> (carry, _Sched row)``.

    Also the body of ``sajax.sim_incremental``'s re-simulation from a checkpoint: the same
    function of the same carry gives the same rows, so both paths agree exactly.
    """
    lane = jnp.arange(max_slots, dtype=jnp.int32)

    def admit_one(c: _Carry, x):
        k, n_in, n_out, ok = x
        need = n_in + n_out
        cand = jnp.maximum(c.release, c.admit)  # (S,) earliest time slot j could be taken
        if use_kv:
            s = cand[_first_fitting(c, cand, need, kv_cap, slots)]
        else:
            s = cand[0]

        def rate_at(t):  # prefill tokens per iteration at t: the budget minus decode tokens
            return jnp.maximum(budget - jnp.sum((c.first < t) & (c.release > t)), 1)

        # The prefill pipeline: continue in its last iteration if it has room left.
        same = s <= c.pf_iter
        p0 = jnp.maximum(s, c.pf_iter)
        rate0 = rate_at(p0)
        room = rate0 - c.pf_used
        p = jnp.where(same, jnp.where(room > 0, c.pf_iter, c.pf_iter + 1), s)
        rate = jnp.where(p == p0, rate0, rate_at(p))
        used = jnp.where(same & (room > 0), c.pf_used, 0)
        avail = rate - used
        single = n_in <= avail
        rest = n_in - avail
        extra = jnp.where(single, 0, (rest + rate - 1) // rate)
        f = p + extra
        chunk0 = jnp.where(single, n_in, avail)
        last = jnp.where(single, used + n_in, rest - (extra - 1) * rate)
        e = f + n_out - 1
        # Take the earliest-released entry (free by s: any free slot will do) and insert the
        # new one in sorted place: lanes before ``pos`` shift down by one (a static slice, no
        # gather), lane ``pos`` gets the new entry, the lanes after stay.
        pos = jnp.sum(c.release[1:] < e + 1)

        def put(vec, value):
            shifted = jnp.concatenate([vec[1:], vec[-1:]])
            return jnp.where(lane < pos, shifted, jnp.where(lane == pos, value, vec))

        new = _Carry(
            release=put(c.release, e + 1),
            owner=put(c.owner, k),
            first=put(c.first, f),
            reserved=put(c.reserved, need),
            admit=s,
            pf_iter=f,
            pf_used=last,
            popped=c.release[0],
        )
        carry = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, c)
        # Padding rows emit the carried values, so p, f and the pops stay non-decreasing.
        key = jnp.maximum(c.pf_iter, 0)
        row = _Sched(
            admit=jnp.where(ok, s, c.admit),
            start=jnp.where(ok, p, key),
            first=jnp.where(ok, f, key),
            finish=jnp.where(ok, e, key),
            chunk0=chunk0,
            rate=rate,
            popped_at=jnp.where(ok, c.release[0], c.popped),
            popped_owner=jnp.where(ok, c.owner[0], -1),
        )
        return carry, row

    return admit_one


def _schedule(order, problem: Problem, model: EngineModel, max_slots: int, use_kv: bool):
    n = order.shape[0]
    inp, out, live = _by_position(order, problem)
    slots, budget, kv_cap = _engine_consts(problem, model, n)
    admit_one = _admit_fn(slots, budget, kv_cap, max_slots, use_kv)
    positions = jnp.arange(n, dtype=jnp.int32)
    final, sched = jax.lax.scan(
        admit_one, _init_carry(slots, max_slots), (positions, inp, out, live)
    )
    return sched, final, inp, out, live, slots


def _pieces(sched: _Sched, inp, out, live, model: EngineModel):
    """Per request: P1 in local ``u = t - p`` (N, 3), and the changes of the global-``t``
    polynomial at ``f`` (P2 starts) and at ``e`` (P3 replaces P2), (N, 3) each."""
    b = jnp.asarray(model.b_ms, jnp.float32)
    c = jnp.asarray(model.c_ms, jnp.float32)
    d = jnp.asarray(model.d_ms, jnp.float32)
    p, f, e = sched.start, sched.first, sched.finish
    n = inp.astype(jnp.float32)
    l0 = sched.chunk0.astype(jnp.float32)
    r = sched.rate.astype(jnp.float32)
    span = (f - p).astype(jnp.float32)  # prefill iterations before the last one
    chunked = f > p

    # P1, prefill in progress on [p, f), u = t - p: F = L0 + R u, C = (u+1) L0 + R u (u+1) / 2.
    k1 = jnp.stack([(b + c) * l0, b * r + c * l0 + c * r / 2, c * r / 2], axis=-1)
    k1 = jnp.where(chunked[:, None], k1, 0.0)
    # P2, decoding on [f, e], m = t - f: F = n + m, C = Cpre + n + m n + m (m+1) / 2, and m + 1
    # sampled rows (the first token at f, one per step after it).
    c_pre = jnp.where(chunked, span * l0 + r * (span - 1) * span / 2, 0.0)
    k2_0 = b * n + c * (c_pre + n) + d
    k2 = jnp.stack([k2_0, b + d + c * n + c / 2, jnp.full_like(n, c / 2)], axis=-1)
    # P3, done: the constant P2(e).
    m_end = (out - 1).astype(jnp.float32)
    zero = jnp.zeros_like(n)
    k3 = jnp.stack([k2[:, 0] + k2[:, 1] * m_end + k2[:, 2] * m_end**2, zero, zero], axis=-1)

    def global_poly(k, origin):
        t0 = origin.astype(jnp.float32)
        return jnp.stack(
            [k[:, 0] - k[:, 1] * t0 + k[:, 2] * t0**2, k[:, 1] - 2 * k[:, 2] * t0, k[:, 2]], axis=-1
        )

    g2, g3 = global_poly(k2, f), global_poly(k3, e)
    w = live[:, None].astype(jnp.float32)
    return k1 * w, g2 * w, (g3 - g2) * w


def _times_at_first_and_finish(sched: _Sched, e_keys, e_owner, k1, d2, e_deltas, a_ms):
    """(N,) times at every position's first-token and finish iteration, by position.

    The first-token breakpoints ``f`` (P2 starts) and the finish breakpoints (``e_keys``, P3
    replaces P2) are two sorted lists. Their merge needs no sort: the merged index of an entry
    is its index in its own list plus its rank in the other (``searchsorted``; at equal keys the
    finish entries come first). The cumulative sum of the deltas then runs in time order: a
    piece's opening and closing changes cancel as soon as it ends, which keeps the float32 sums
    as small as the pieces open at a time (separate sums per list would grow with the whole job
    and lose precision). Every query is itself an entry (``f_k`` of the first list, ``e_k`` of
    the second: its slot's release, owner ``k``), so the sum at it is the one at the end of its
    run of equal keys. The prefill share (P1) comes from the one prompt being chunked then, the
    last ``j`` with ``p_j <= q`` (the prefill windows ``[p_j, f_j)`` are disjoint; a search in
    the sorted starts ``p``), and is evaluated locally: in global ``t`` its coefficients
    (``c R / 2 * p**2``) would swamp float32 sums of long jobs.
    """
    n = sched.first.shape[0]
    cap = jnp.int32(2**28 - 1)  # keys beyond are never-released slots (zero deltas)
    f_key, e_key = jnp.minimum(sched.first, cap), jnp.minimum(e_keys, cap)
    n_e = e_key.shape[0]
    f_at = jnp.arange(n, dtype=jnp.int32) + _rank(e_key, f_key, "right")
    e_at = jnp.arange(n_e, dtype=jnp.int32) + _rank(f_key, e_key, "left")
    m = n + n_e
    key = jnp.zeros(m, jnp.int32).at[f_at].set(f_key, unique_indices=True)
    key = key.at[e_at].set(e_key, unique_indices=True)
    deltas = jnp.zeros((m, 3), d2.dtype).at[f_at].set(d2, unique_indices=True)
    deltas = deltas.at[e_at].set(e_deltas, unique_indices=True)
    coef = _running(jnp.add, jnp.zeros(3, d2.dtype), deltas)
    idx = jnp.arange(m, dtype=jnp.int32)
    last_of_run = jnp.concatenate([key[1:] != key[:-1], jnp.ones(1, bool)])
    run_end = _running(jnp.minimum, jnp.int32(m), jnp.where(last_of_run, idx, m), reverse=True)

    def time_at(at, q):
        c = coef[run_end[at]]
        j = jnp.maximum(_rank(sched.start, q, "right") - 1, 0)
        u = (q - sched.start[j]).astype(jnp.float32)
        inside = (q >= sched.start[j]) & (q < sched.first[j])
        k = k1[j]
        qf = q.astype(jnp.float32)
        t = a_ms * (qf + 1.0) + c[:, 0] + c[:, 1] * qf + c[:, 2] * qf * qf
        return t + jnp.where(inside, k[:, 0] + k[:, 1] * u + k[:, 2] * u * u, 0.0)

    at_first = time_at(f_at, sched.first)
    at_release = time_at(e_at, e_keys)
    target = jnp.where(e_owner >= 0, e_owner, n)  # -1: an initial (empty) slot entry
    at_finish = jnp.zeros(n, at_release.dtype).at[target].set(at_release, mode="drop")
    return at_first, at_finish


def _running(op, init, xs, reverse: bool = False):
    """Inclusive running ``op`` along axis 0 as a sequential loop (on CPU several times faster
    than ``jnp.cumsum`` / ``lax.cummin``, which lower to log-depth passes)."""

    def body(acc, x):
        acc = op(acc, x)
        return acc, acc

    return jax.lax.scan(body, init, xs, reverse=reverse)[1]


def _rank(sorted_keys, q, side: str):
    """``searchsorted`` as int32 (unrolled binary search: the fastest form on CPU here)."""
    return jnp.searchsorted(sorted_keys, q, side=side, method="scan_unrolled").astype(jnp.int32)


def _finish_pieces(sched: _Sched, final: _Carry, d3):
    """The e-breakpoints in sorted order: entries taken off the buffer, then what is left in it.

    Every entry taken is the buffer's minimum, and later entries release later, so the pops are
    non-decreasing and no smaller than anything left in the (sorted) final buffer.
    """
    owner = jnp.concatenate([sched.popped_owner, final.owner])
    keys = jnp.concatenate([sched.popped_at, final.release]) - 1  # release = e + 1
    deltas = jnp.where((owner >= 0)[:, None], d3[jnp.maximum(owner, 0)], 0.0)
    return keys, deltas, owner


def simulate(
    order: jax.Array,
    problem: Problem,
    model: EngineModel,
    *,
    max_slots: int | None = None,
    kv: bool | None = None,
) -> Timings:
    """Predicted per-request timings of submitting rows in ``order`` (an (N,) permutation).

    ``max_slots`` (static) bounds the in-flight slots (see module docstring); ``kv`` (static)
    turns the KV-capacity check on or off (default: on unless ``model.kv_capacity`` is known to
    be 0). Padding rows may sit anywhere in ``order``; they take no slot and get time 0.
    """
    n = jnp.shape(order)[0]
    s_max = resolve_max_slots(model, n, max_slots)
    if kv is None:
        kv_known = _static_int(model.kv_capacity)
        kv = kv_known is None or kv_known > 0
    return _simulate(order, problem, model, s_max, bool(kv))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _simulate(order, problem: Problem, model: EngineModel, s_max: int, kv: bool) -> Timings:
    order = jnp.asarray(order, jnp.int32)
    sched, final, inp, out, live, slots = _schedule(order, problem, model, s_max, bool(kv))
    return timings_from_schedule(order, sched, final, inp, out, live, slots > s_max, model)


def timings_from_schedule(order, sched: _Sched, final: _Carry, inp, out, live, overflow, model):
    """``Timings`` from the scan's rows and final carry (the O(N log N) part of ``simulate``)."""
    k1, d2, d3 = _pieces(sched, inp, out, live, model)
    e_keys, e_deltas, e_owner = _finish_pieces(sched, final, d3)
    a = jnp.asarray(model.a_ms, jnp.float32)
    at_first, at_finish = _times_at_first_and_finish(sched, e_keys, e_owner, k1, d2, e_deltas, a)
    first_ms = jnp.where(live, at_first, 0.0)
    finish_ms = jnp.where(live, at_finish, 0.0)

    def by_row(x):
        return jnp.zeros_like(x).at[order].set(x)

    last = jnp.max(jnp.where(live, sched.finish, -1))
    return Timings(
        first_token_ms=by_row(first_ms),
        finish_ms=by_row(finish_ms),
        admit_iter=by_row(jnp.where(live, sched.admit, 0)),
        first_iter=by_row(jnp.where(live, sched.first, 0)),
        finish_iter=by_row(jnp.where(live, sched.finish, 0)),
        n_iterations=last + 1,
        makespan_ms=jnp.max(finish_ms),
        overflow=overflow,
    )
