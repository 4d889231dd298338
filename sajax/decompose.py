"""Planning large jobs in windows: a rolling horizon over the submission order.

One permutation of 100,000 requests is too big to anneal in minutes: every proposal re-simulates
the whole job. Instead the order is improved *window by window*. With the current global order
``pi`` and its full simulation (the fast model), window ``k`` is the block of positions
``[s_k, s_k + W)``. Its sub-problem holds

- the window's W requests, free to move, and
- a fixed *context*: the ``H`` requests just before the window (H = the in-flight cap), which in
  the full run are still in flight when the window's first request is admitted; they run first,
  and they do not count in the window's energy (weight 0);

simulated on an idle engine and shifted by a constant *offset* ``T_k`` so that the sub-simulation
of the current window order matches the full simulation of it (``T_k`` = the median over the
window's requests of ``first_full - first_sub``). The window energy is the job objective restricted
to the window; for G (the paper's ratio) it is the first-order change of the job's G
(``goodput_window`` in ``sajax.objectives.slo``: ``-(hits_w - G_ref * t_w)``), so an
improvement of a window is an improvement of the job.

All windows of a pass are annealed *together* (one ``sajax.anneal_many`` call, the windows are
the instance axis), each starting from its current order. Then the job is re-simulated, offsets
are refreshed and the next pass runs with windows shifted by ``W / 2`` so that requests can move
across the previous boundaries. A pass is kept only if the job's exact energy did not rise.
Before the first pass the seed order (``sajax.planner.build_seeds``: heuristics, blends and
relaxation orders at every cap, then Moore-Hodgson and push-back of the best heuristic or blend,
``sajax.triage``) already moves hopeless requests
across the whole job; at 10,000 requests that seed carries almost all of the gain.

Cost per pass: (number of windows) x (chains) x (steps) simulations of ``W + H`` requests, plus
one full simulation; the quality cost of windows is measured against one full permutation in
``benchmarks/planner_scale.py``.

    order, cap, info = plan_windows(cp, n_real, model, config, key, started)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from sajax.engine_model import EngineModel
from sajax.metrics import goodput, problem_metrics
from sajax.objectives.slo import objective_params
from sajax.problem import Problem


def window_bounds(n_real: int, size: int, shift: int) -> list[tuple[int, int]]:
    """Contiguous windows ``[lo, hi)`` covering ``0..n_real-1``: the first one is ``[0, shift)``
    when ``shift > 0``, then blocks of ``size``."""
    if size < 2:
        raise ValueError(f"window size must be >= 2, got {size}")
    cuts = [0] + list(range(shift if shift > 0 else size, n_real, size)) + [n_real]
    cuts = sorted(set(cuts))
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True) if hi > lo]


def window_problem(
    cp: Problem, order: np.ndarray, lo: int, hi: int, size: int, head: int
) -> tuple[Problem, np.ndarray, np.ndarray]:
    """The sub-problem of window ``[lo, hi)`` of ``order``.

    Layout (length ``size + head``): positions ``0..hi-lo-1`` are the window's requests in their
    current order (free to move: ``n_valid = hi - lo``), then padding up to ``size``, then the
    ``head`` context requests ``order[lo-head:lo]`` (or padding where there are fewer). The
    energy rolls the permutation by ``head`` so that the context runs first.

    Returns (sub-problem, rows: (size,) row index of each window position (-1 = padding),
    context rows: (head,) (-1 = padding)).
    """
    n_win = hi - lo
    rows = np.full(size, -1, np.int64)
    rows[:n_win] = order[lo:hi]
    ctx = np.full(head, -1, np.int64)
    c_lo = max(lo - head, 0)
    if head:
        ctx[head - (lo - c_lo) :] = order[c_lo:lo]
    all_rows = np.concatenate([rows, ctx])
    real = all_rows >= 0
    idx = np.where(real, all_rows, 0)

    def take(x, fill, dtype):
        return np.where(real, np.asarray(x)[idx], fill).astype(dtype)

    sub = Problem(
        input_len=take(cp.input_len, 1, np.int32),
        output_len=take(cp.output_len, 1, np.int32),
        slo_e2e_ms=take(cp.slo_e2e_ms, np.inf, np.float32),
        slo_ttft_ms=take(cp.slo_ttft_ms, np.inf, np.float32),
        slo_tpot_ms=take(cp.slo_tpot_ms, np.inf, np.float32),
        # the context is simulated but does not count
        weight=np.where(np.arange(size + head) < size, take(cp.weight, 0.0, np.float32), 0.0),
        mask=real,
    )
    return sub, rows, ctx


def plan_windows(cp: Problem, n_real: int, model: EngineModel, config, key, started):
    """Order and cap for a job of ``n_real`` requests by windows (module doc)."""
    from sajax import planner as P
    from sajax.planner.search import search_stats

    key_scen, key_run = jax.random.split(key)
    caps = P.candidate_caps(int(np.asarray(model.slots)), config.caps)
    scale = P.objective_scale(cp, model)
    data = P.make_data(cp, model, config, key_scen, scale)
    all_caps = [*caps, int(np.asarray(model.slots))]
    max_slots, kv = P.sim_settings(model, all_caps, cp.mask.shape[0], data.problem)
    exact = P.PlanEnergy(config.objective, config.scenarios > 0, 0, max_slots, kv)
    exact_data = data._replace(params=objective_params(0.0, scale))

    # Seeds at every cap (whole job); Moore-Hodgson and push-back only from the best
    # heuristic or blend (cost).
    names, orders, e_seed = P.build_seeds(
        cp, n_real, model, caps, exact, exact_data, config, 1, relaxed_top=0
    )
    ci, si = np.unravel_index(np.argmin(e_seed), e_seed.shape)
    cap = caps[ci]
    cap_model = P.with_cap(model, cap)
    order = orders[si].copy()
    best_seed = names[si]
    seed_energy = {k: float(e_seed[:, i].min()) for i, k in enumerate(names)}
    energy = float(e_seed[ci, si])

    size = int(min(config.window_size, n_real))
    head = int(cap)
    w_size = size + head
    w_slots, _ = P.sim_settings(model, [cap], w_size)
    w_energy = P.PlanEnergy(
        _window_objective(config.objective), config.scenarios > 0, head, w_slots, kv
    )
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    n_windows = len(window_bounds(n_real, size, size // 2)) if size < n_real else 1
    passes, steps_done, stop, stats = 0, 0, "steps", []
    while passes < config.max_passes:
        shift = (size // 2) * (passes % 2)
        bounds = window_bounds(n_real, size, shift)
        # A fixed window count for every pass (empty windows pad it): one compiled program.
        bounds += [(n_real, n_real)] * (n_windows - len(bounds))
        first, finish = P.predict(order, cp, cap_model, exact)
        g_ref = _g(first, finish, cp)
        subs, rows, ctxs = [], [], []
        for lo, hi in bounds:
            sub, r, c = window_problem(cp, order, lo, hi, size, head)
            subs.append(sub)
            rows.append(r)
            ctxs.append(c)
        stacked = Problem(*(np.stack(x) for x in zip(*subs, strict=True)))
        offsets = _offsets(stacked, rows, first, cap_model, w_energy)
        params = objective_params(config.tau, scale, g_ref)
        b = len(bounds)
        rep = lambda x, b=b: np.broadcast_to(np.asarray(x), (b, *np.shape(x)))  # noqa: E731
        w_data = P.PlanData(
            _scenario_windows(stacked, data, rows, ctxs, config),
            jax.tree.map(rep, cap_model),
            jax.tree.map(rep, params),
            offsets.astype(np.float32),
        )
        n_valid = np.asarray([max(hi - lo, 1) for lo, hi in bounds], np.int32)
        init = np.arange(size + head, dtype=np.int32)[None]
        remaining = None if deadline is None else deadline - time.perf_counter()
        if remaining is not None and remaining <= 0:
            stop = "time_budget"
            break
        pass_cfg = _pass_config(config, remaining, passes)
        res, steps, why = P.run_search(
            w_energy,
            jax.random.fold_in(key_run, passes),
            size + head,
            w_data,
            np.broadcast_to(init, (b, 1, size + head)),
            None,
            pass_cfg,
            time.perf_counter(),
            n_valid_batch=n_valid,
        )
        if res is not None:
            stats.append((steps_done, search_stats(res), int(np.sum(res.proposed))))
        steps_done += steps
        if res is None:  # the budget ended before this pass could start
            stop = why
            break
        new_order = order.copy()
        best = np.asarray(res.best_perm)  # (B, size + head)
        for k, (lo, hi) in enumerate(bounds):
            if hi <= lo:
                continue
            perm = best[k][: hi - lo]
            new_order[lo:hi] = rows[k][perm]
        new_e = float(P.score_orders(exact, new_order[None], exact_data, [cap])[0, 0])
        passes += 1
        if new_e <= energy:
            order, energy = new_order, new_e
        if deadline is not None and time.perf_counter() >= deadline - 1.0:
            stop = "time_budget"  # a pass that used its share of the budget is normal
            break
    info = dict(
        best_seed=best_seed,
        seed_energy=seed_energy,
        cap_energy={int(c): float(e_seed[i].min()) for i, c in enumerate(caps)}
        | {int(cap): energy},
        energy=energy,
        steps=steps_done,
        stop_reason=stop,
        windows=len(window_bounds(n_real, size, 0)),
        data=data,
        passes=passes,
        energy_fn=exact,
        stats=_pooled_stats(stats),
    )
    return order.astype(np.int32), int(cap), info


def _pooled_stats(stats: list) -> dict:
    """The passes' search figures as one search's: kicks summed, the last improvement in steps
    of all passes, acceptance pooled over their sequential steps."""
    from sajax.planner.search import search_stats

    if not stats:
        return search_stats(None)
    proposed = sum(p for _, _, p in stats)
    last = [
        off + s["search_last_improvement"]
        for off, s, _ in stats
        if s["search_last_improvement"] >= 0
    ]
    return dict(
        search_restarts=sum(s["search_restarts"] for _, s, _ in stats),
        search_last_improvement=max(last, default=-1),
        search_acceptance=sum(s["search_acceptance"] * p for _, s, p in stats) / max(proposed, 1),
    )


def _window_objective(name: str) -> str:
    from sajax.objectives.slo import ALIASES

    key = ALIASES.get(name, ALIASES.get(name.lower(), name.lower()))
    return "goodput_window" if key == "goodput" else key


def _pass_config(config, remaining, passes):
    """The per-pass search settings: the budget left split over the passes still to run."""
    import dataclasses

    left = max(config.max_passes - passes, 1)
    budget = None if remaining is None else max(remaining / left, 1e-3)
    return dataclasses.replace(
        config,
        chains=config.window_chains,
        steps=config.window_steps,
        time_budget_s=budget,
        polish_rounds=0,  # windows are not polished: keep no time for it
    )


def _g(first, finish, cp) -> float:
    m = problem_metrics(first, finish, cp)
    return float(goodput(m.met, m.has_slo, m.e2e_ms, cp.weight, cp.mask))


def _offsets(stacked: Problem, rows, first_full, model, energy) -> np.ndarray:
    """(B,) offsets: median of full-run minus window-run first-token times (current order)."""
    size_all = stacked.mask.shape[1]
    ident = jnp.roll(jnp.arange(size_all, dtype=jnp.int32), energy.head)
    sub_first, _ = jax.device_get(_window_sim(ident, stacked, model, energy.max_slots, energy.kv))
    out = np.zeros(len(rows))
    for k, r in enumerate(rows):
        live = r >= 0
        if not live.any():  # an empty window (padding the window count)
            continue
        sub = np.asarray(sub_first[k], np.float64)[: len(r)]
        out[k] = np.median(first_full[r[live]] - sub[live])
    return out


def _window_sim_impl(order, stacked, model, max_slots, kv):
    from sajax.planner import timings

    return jax.vmap(timings, in_axes=(None, 0, None, None, None))(
        order, stacked, model, max_slots, kv
    )


_window_sim = jax.jit(_window_sim_impl, static_argnums=(3, 4))


def _scenario_windows(stacked: Problem, data, rows, ctxs, config) -> Problem:
    """Robust mode: the windows' output lengths per scenario, (B, K, size + head)."""
    if config.scenarios <= 0:
        return stacked
    scen = np.asarray(data.problem.output_len)  # (K, N)
    out = []
    for r, c in zip(rows, ctxs, strict=True):
        all_rows = np.concatenate([r, c])
        out.append(np.where(all_rows >= 0, scen[:, np.maximum(all_rows, 0)], 1))
    return stacked._replace(output_len=np.stack(out).astype(np.int32))
