"""An iteration-aware upper bound on SLO attainment (any order, any cap <= slots), as a MILP.

The engine is ``sajax.refsim``'s: all requests submitted at t0, iterations back to back, an
iteration costing ``a + b * forward + c * context``. ``planner_slot_bound.py`` charges each
request ``a / slots`` per iteration, as if the fixed cost were shared by a full batch, and
lets a chat's decode cost nothing (TPOT relaxed). Both are loose where the tightest level
binds: a code request (200-500 tokens out) needs that many iterations of its own, and a met
chat must also finish. This bound keeps what holds for every schedule of that engine.

Milestones. A met request has one or two (deadline ``D``, work ``w``, iterations ``k``):

- e2e SLO: ``(slo_e2e, W_i, out_i)`` with ``W_i = b * (in + out - 1) + c * (out * in +
  out (out - 1) / 2)`` -- its own forward tokens and attended context (refsim: prompt
  ``in``, then ``in + g`` at decode step ``g = 1..out-1``; a chunked prompt attends more);
- TTFT SLO: ``(slo_ttft, b * in + c * in, 1)``, and with a TPOT SLO and ``out > 1`` also
  ``(slo_ttft + (out - 1) * slo_tpot, W_i, out_i)``: tpot = (finish - first) / (out - 1), so a
  met chat finishes by then.

Constraints, for each threshold ``t`` (a subset of the milestone deadlines; fewer, still a
relaxation), with ``N_t`` = iterations completed by ``t`` and ``x_i`` = 1 when ``i`` is met:

- engine time: ``a * N_t + sum_i x_i w_i(t) <= t`` (``w_i(t)``: the work of ``i``'s latest
  milestone due by ``t``; each iteration costs ``a`` plus the tokens and context of the met
  requests in it -- the other requests' share is >= 0);
- iterations are sequential: ``N_t >= k_i x_i`` for a milestone due by ``t`` (one token per
  iteration per sequence), ``N_t >= sum_i x_i k_i(t) / slots``, and ``N_t`` nondecreasing;
- slot time and one sequence per slot (``planner_slot_bound.py``): ``sum x_i p_i(t) <= slots *
  t`` with ``p_i = a k_i + w_i`` its shortest hold, and ``#{x_i: p_i(t) > t / (k + 1)} <= k *
  slots``; KV: ``sum x_i (in_i + out_i) p_i(t) <= kv_capacity * t``;
- admitted by ``t`` (its first milestone due by ``t``), a request holds its slot until it
  finishes, at least ``p_full = a out + W``: ``#{x_i: admitted by t, p_full > t / k} <= k slots``;
- pending (a met chat whose TTFT is due by ``t``, its finish not): it is finished by ``t`` (all
  its work and ``out`` iterations inside ``t``) or one of at most ``slots`` sequences (and
  ``kv_capacity`` tokens) in flight at ``t``; ``u`` in [0, x] marks "in flight", and the finished
  share ``x - u`` is charged to the engine time, the slot time and ``N_t``;
- ``N_t >= L`` levels as binaries (``lam[t, l]``): a finished or due request with ``k`` iterations
  forces the largest level ``<= k`` (branching on these, not on fractional ``x``, bites).

``max sum x_i`` is solved by HiGHS (``scipy.optimize.milp``); with a time limit its dual bound
is used (floored), still an upper bound. It bounds the attainment of every order and cap of
that engine on the lengths given (``oracle``: the planners' lengths; ``predicted (actual)``: the
lengths the reference simulator runs in the table's predicted case, which bounds any plan's
measured figure there, since a plan's order is one order of that engine).

The primal side: the MILP's chosen set, by deadline, then the rest shortest first, is also run
by the reference simulator (``bound-set EDF``): a real plan, a lower bound on the optimum.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/planner_iteration_bound.py --levels very_tight
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, hstack, vstack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner_table import LEVEL_ORDER, cell_inputs, reference_metrics  # noqa: E402

from batch_runner.workloads.synthetic import TIGHTNESS_LEVELS, mix_problem  # noqa: E402
from sajax.heuristics import alone_time  # noqa: E402
from sajax.profiles import load_profile  # noqa: E402

EPS = 1e-6  # relative slack on deadlines: the metrics compare in float32


def milestones(inp, out, e2e, ttft, tpot, model):
    """Per milestone: request row, deadline, work (ms), iterations (module doc)."""
    a, b, c = (float(np.asarray(x)) for x in (model.a_ms, model.b_ms, model.c_ms))
    del a
    full = b * (inp + out - 1) + c * (out * inp + out * (out - 1) / 2)
    rows, dead, work, iters = [], [], [], []

    def add(mask, d, w, k):
        idx = np.flatnonzero(mask)
        rows.append(idx)
        dead.append(d[idx])
        work.append(np.broadcast_to(w, inp.shape)[idx])
        iters.append(np.broadcast_to(k, inp.shape)[idx])

    has_e2e, has_ttft = np.isfinite(e2e), np.isfinite(ttft)
    add(has_e2e, e2e, full, out)
    add(has_ttft, ttft, (b + c) * inp, np.ones_like(out))
    finish_by = np.where(out > 1, ttft + (out - 1) * tpot, np.inf)
    add(
        has_ttft & np.isfinite(finish_by) & (finish_by < np.where(has_e2e, e2e, np.inf)),
        finish_by,
        full,
        out,
    )
    rows, dead, work, iters = (np.concatenate(x) for x in (rows, dead, work, iters))
    return rows, dead * (1 + EPS), work, iters.astype(np.float64)


def iteration_bound(
    inp, out, e2e, ttft, tpot, model, *, k_max=4, thresholds=50, levels=24, time_limit=60.0
) -> dict:
    """The MILP bound (module doc) over the rows with an SLO: bound, incumbent, chosen set."""
    a = float(np.asarray(model.a_ms))
    slots = float(np.asarray(model.slots))
    kv = float(np.asarray(model.kv_capacity))
    has_slo = np.isfinite(e2e) | np.isfinite(ttft) | np.isfinite(tpot)
    timed = np.flatnonzero(np.isfinite(e2e) | np.isfinite(ttft))
    sub = lambda x: np.asarray(x, np.float64)[timed]  # noqa: E731
    inp_t, out_t = sub(inp), sub(out)
    rows, dead, work, iters = milestones(inp_t, out_t, sub(e2e), sub(ttft), sub(tpot), model)
    n = len(timed)
    ts = np.unique(dead)
    if len(ts) > thresholds:
        ts = np.unique(np.quantile(ts, np.linspace(0, 1, thresholds), method="higher"))
    n_t = len(ts)
    # w_i(t): the latest milestone of i due by t (milestones of a row grow in work and deadline)
    w_it = np.zeros((n_t, n))
    k_it = np.zeros((n_t, n))
    for r, d, w, k in zip(rows, dead, work, iters, strict=True):
        due = ts >= d
        w_it[due, r] = np.maximum(w_it[due, r], w)
        k_it[due, r] = np.maximum(k_it[due, r], k)
    hold = a * k_it + w_it
    first_due = np.full(n, np.inf)
    np.minimum.at(first_due, rows, dead)
    full = np.zeros(n)
    np.maximum.at(full, rows, work)
    p_full = a * out_t + full
    # pending pairs (t, j): j's first milestone (a chat's TTFT) is due by t, its finish is not;
    # if met, j is then finished by t or one of the <= slots sequences in flight at t (u = 1)
    admitted = ts[:, None] >= first_due[None, :]
    pend_t, pend_j = np.nonzero(admitted & (w_it < full[None, :]))
    n_p = len(pend_t)
    rest_work = full[pend_j] - w_it[pend_t, pend_j]
    rest_iter = out_t[pend_j] - k_it[pend_t, pend_j]
    rest_hold = p_full[pend_j] - hold[pend_t, pend_j]
    n_var = n + n_t + n_p
    blocks, lo, hi = [], [], []

    def block(x_part, n_part=None, u_rows=None, u_vals=None, lower=-np.inf, upper=np.inf):
        """Rows over (x, N, u): dense x and N parts, u entries at (row, pair) with values."""
        r = x_part.shape[0]
        n_part = np.zeros((r, n_t)) if n_part is None else n_part
        dense = coo_matrix(np.hstack([x_part, n_part]), shape=(r, n + n_t))
        u = coo_matrix((r, n_p))
        if u_rows is not None:
            u = coo_matrix((u_vals, (u_rows, np.arange(n_p))), shape=(r, n_p))
        blocks.append(hstack([dense, u]))
        lo.append(np.broadcast_to(lower, r))
        hi.append(np.broadcast_to(upper, r))

    def pend(values):
        """x part adding ``values`` of each pending pair to its row, and the u part (-values)."""
        x_part = np.zeros((n_t, n))
        np.add.at(x_part, (pend_t, pend_j), values)
        return x_part, pend_t, -values

    eye = np.eye(n_t)
    xw, ur, uv = pend(rest_work)
    block(w_it + xw, a * eye, ur, uv, upper=ts)  # engine time
    xk, ur, uv = pend(rest_iter / slots)
    block(-(k_it / slots + xk), eye, ur, -uv, lower=0.0)  # N_t >= sum k / slots
    mono = eye[1:] - eye[:-1]
    block(np.zeros((n_t - 1, n)), mono, lower=0.0)
    xh, ur, uv = pend(rest_hold)
    block(hold + xh, None, ur, uv, upper=slots * ts)  # slot time
    if kv > 0:
        size = inp_t + out_t
        xh, ur, uv = pend(rest_hold * size[pend_j])
        block(hold * size[None, :] + xh, None, ur, uv, upper=kv * ts)
        block(np.zeros((n_t, n)), None, pend_t, size[pend_j], upper=kv)  # in flight at t
    block(np.zeros((n_t, n)), None, pend_t, np.ones(n_p), upper=slots)  # in flight at t
    for k in range(1, k_max + 1):
        long = ((hold > ts[:, None] / (k + 1)) & (k_it > 0)).astype(np.float64)
        block(long, upper=k * slots)
    # one slot admits at most k requests by t that each hold it longer than t / k
    for k in range(1, 2 * k_max + 1):
        busy = (admitted & (p_full[None, :] > ts[:, None] / k)).astype(np.float64)
        block(busy, upper=k * slots)
    a_mat = [*blocks]
    lower, upper = list(lo), list(hi)
    # N_t >= k_i x_i at the first threshold that covers each milestone (monotone N does the rest)
    first = np.searchsorted(ts, dead, side="left")
    keep = (first < n_t) & (iters > 1)
    m = int(keep.sum())
    a_mat.append(
        coo_matrix(
            (
                np.concatenate([-iters[keep], np.ones(m)]),
                (np.arange(2 * m) % m, np.concatenate([rows[keep], n + first[keep]])),
            ),
            shape=(m, n_var),
        )
    )
    lower.append(np.zeros(m))
    upper.append(np.full(m, np.inf))
    # pending: u <= x, and a finished one needed all its iterations: N_t >= out_j (x_j - u)
    idx = np.arange(n_p)
    a_mat.append(
        coo_matrix(
            (np.r_[np.ones(n_p), -np.ones(n_p)], (np.r_[idx, idx], np.r_[n + n_t + idx, pend_j])),
            shape=(n_p, n_var),
        )
    )
    lower.append(np.full(n_p, -np.inf))
    upper.append(np.zeros(n_p))
    o = out_t[pend_j]
    a_mat.append(
        coo_matrix(
            (
                np.r_[np.ones(n_p), -o, o],
                (np.r_[idx, idx, idx], np.r_[n + pend_t, pend_j, n + n_t + idx]),
            ),
            shape=(n_p, n_var),
        )
    )
    lower.append(np.zeros(n_p))
    upper.append(np.full(n_p, np.inf))
    # iteration levels: lam[t, lv] = 1 when N_t >= L_l (binary; branching on these is what
    # makes the max-type "N_t >= out_j of every finished j" bite, fractional x cannot halve it)
    lev = np.unique(np.round(np.geomspace(2, max(out_t.max(), 2), levels)))
    n_l = len(lev)
    lam = lambda t, lv: n_var + t * n_l + lv  # noqa: E731
    n_all = n_var + n_t * n_l
    a_mat = [hstack([vstack(a_mat), coo_matrix((sum(x.shape[0] for x in a_mat), n_t * n_l))])]
    r_rows, r_cols, r_vals, r_hi = [], [], [], []

    def row(cols, vals, hi_=0.0):
        r = len(r_hi)
        r_rows.extend([r] * len(cols))
        r_cols.extend(cols)
        r_vals.extend(vals)
        r_hi.append(hi_)

    step = np.diff(np.r_[0.0, lev])
    for t in range(n_t):
        row([n + t] + [lam(t, lv) for lv in range(n_l)], [-1.0] + list(step))  # N_t >= sum
        for lv in range(n_l - 1):
            row([lam(t, lv + 1), lam(t, lv)], [1.0, -1.0])
            if t + 1 < n_t:
                row([lam(t, lv), lam(t + 1, lv)], [1.0, -1.0])
    level_of = np.searchsorted(lev, out_t, side="right") - 1  # largest L_l <= out
    for r, f, k in zip(rows[keep], first[keep], iters[keep], strict=True):
        lv = int(np.searchsorted(lev, k, side="right") - 1)
        if lv >= 0:
            row([r, lam(int(f), lv)], [1.0, -1.0])
    for q in range(n_p):
        lv = int(level_of[pend_j[q]])
        if lv >= 0:
            row([pend_j[q], n + n_t + q, lam(int(pend_t[q]), lv)], [1.0, -1.0, -1.0])
    a_mat.append(coo_matrix((r_vals, (r_rows, r_cols)), shape=(len(r_hi), n_all)))
    lower.append(np.full(len(r_hi), -np.inf))
    upper.append(np.asarray(r_hi))
    a_mat = vstack(a_mat).tocsr()
    lower, upper = np.concatenate(lower), np.concatenate(upper)
    cost = np.concatenate([-np.ones(n), np.zeros(n_all - n)])
    t0 = time.perf_counter()
    res = milp(
        cost,
        constraints=LinearConstraint(a_mat, lower, upper),
        integrality=np.r_[np.ones(n), np.zeros(n_t + n_p), np.ones(n_t * n_l)],
        bounds=Bounds(
            np.zeros(n_all), np.r_[np.ones(n), np.full(n_t, np.inf), np.ones(n_p + n_t * n_l)]
        ),
        options={"time_limit": time_limit, "disp": False},
    )
    solve_s = time.perf_counter() - t0
    dual = getattr(res, "mip_dual_bound", None)
    if dual is None or not np.isfinite(dual):
        raise RuntimeError(f"HiGHS gave no bound: {res.message}")
    upper_met = float(np.floor(-dual + 1e-6))
    chosen = timed[np.round(res.x[:n]) > 0.5] if res.x is not None else timed[:0]
    extra = int(np.sum(has_slo)) - int(np.sum(np.isfinite(e2e) | np.isfinite(ttft)))
    n_slo = int(has_slo.sum())
    return {
        "bound": (upper_met + extra) / n_slo,
        "incumbent": (len(chosen) + extra) / n_slo,
        "optimal": bool(res.status == 0),
        "solve_s": solve_s,
        "chosen": chosen,
        "rows": a_mat.shape[0],
    }


def set_first_order(chosen, deadline, alone_ms) -> np.ndarray:
    """``chosen`` by deadline, then every other row shortest (alone time) first."""
    rest = np.setdiff1d(np.arange(len(alone_ms)), chosen)
    return np.concatenate(
        [chosen[np.argsort(deadline[chosen], kind="stable")], rest[np.argsort(alone_ms[rest])]]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="gpu-7b-a100")
    ap.add_argument("--levels", nargs="+", default=list(LEVEL_ORDER))
    ap.add_argument("--cases", nargs="+", default=["oracle", "predicted"])
    ap.add_argument("--k-max", type=int, default=4)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--thresholds", type=int, default=50)
    ap.add_argument(
        "--levels-n", type=int, default=24, help="iteration levels (binaries per threshold)"
    )
    args = ap.parse_args()
    model = load_profile(args.profile)
    print(
        "| level | case | FCFS | iteration bound (MILP) | status | 5x FCFS | bound / FCFS "
        "| chosen: code / chat / classification | bound-set EDF (reference) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for level in args.levels:
        for case in args.cases:
            c = cell_inputs(level, "predicted", args.n, args.seed, model)
            out = c.predicted if case == "oracle" else c.actual
            cols = c.cols
            slo = [np.asarray(cols[k], np.float64) for k in ("slo_e2e_ms", "slo_ttft_ms")]
            tpot = np.asarray(cols["slo_tpot_ms"], np.float64)
            fcfs = reference_metrics(np.arange(args.n), int(model.slots), c.inp, out, cols, model)
            ib = iteration_bound(
                c.inp, out, slo[0], slo[1], tpot, model,
                k_max=args.k_max, thresholds=args.thresholds, levels=args.levels_n,
                time_limit=args.time_limit,
            )  # fmt: skip
            tasks = np.asarray(cols["task"])[ib["chosen"]]
            mix = " / ".join(
                str(int(np.sum(tasks == t))) for t in ("code", "chat", "classification")
            )
            deadline = np.fmin(slo[0], slo[1])
            alone = np.asarray(
                alone_time(mix_problem(cols, output_len=out, size=args.n), model).e2e_ms
            )
            order = set_first_order(ib["chosen"], deadline, alone)
            edf = reference_metrics(order, int(model.slots), c.inp, out, cols, model)
            status = "optimal" if ib["optimal"] else f"dual bound (incumbent {ib['incumbent']:.1%})"
            label = "oracle" if case == "oracle" else "predicted (actual)"
            print(
                f"| {level} ({TIGHTNESS_LEVELS[level]:g}) | {label} | {fcfs['attainment']:.1%} | "
                f"**{ib['bound']:.1%}** | {status}, {ib['solve_s']:.1f} s, {ib['rows']:,} rows | "
                f"{5 * fcfs['attainment']:.1%} | {ib['bound'] / fcfs['attainment']:.2f}x | {mix} | "
                f"{edf['attainment']:.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
