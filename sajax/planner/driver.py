"""``plan()``: the planner's stages in order (see ``sajax.planner``'s module doc): seeds,
the annealing of the best caps, exact re-scoring, the polish and the descent, then the
predicted timings and the summary of the winning (order, cap). Jobs larger than
``config.window`` go to ``sajax.decompose``.

    result = plan(problem, model, PlanConfig(time_budget_s=10.0), key=jax.random.key(0))
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from sajax.engine_model import EngineModel
from sajax.metrics import attainment, goodput
from sajax.objectives.slo import objective_params
from sajax.planner.config import Plan, PlanConfig, PlanSummary
from sajax.planner.energy import PlanEnergy, _metrics, _np_model, predict, score_orders
from sajax.planner.prepare import (
    _models_by_cap,
    candidate_caps,
    compact,
    make_data,
    objective_scale,
    with_models,
)
from sajax.planner.refine import descend, polish
from sajax.planner.search import run_search, search_energy, search_stats, sim_settings
from sajax.planner.seeds import build_seeds, chain_starts
from sajax.problem import Problem


def plan(problem: Problem, model: EngineModel, config: PlanConfig | None = None, key=None) -> Plan:
    """The order and in-flight cap for ``problem`` on ``model`` (see module doc)."""
    config = config or PlanConfig()
    started = time.perf_counter()
    key = jax.random.key(0) if key is None else key
    rows, cp = compact(problem)
    n_real = len(rows)
    if n_real == 0:
        raise ValueError("the problem has no real rows (mask is all False)")
    if n_real > config.window:
        from sajax.decompose import plan_windows

        order_c, cap, info = plan_windows(cp, n_real, model, config, key, started)
    else:
        order_c, cap, info = _plan_small(cp, n_real, model, config, key, started)
    return _finish(problem, rows, cp, n_real, model, config, order_c, cap, info, started)


def _plan_small(cp, n_real, model, config, key, started):
    key_scen, key_anneal = jax.random.split(key)
    caps = candidate_caps(int(np.asarray(model.slots)), config.caps)
    scale = objective_scale(cp, model)
    robust = config.scenarios > 0
    data = make_data(cp, model, config, key_scen, scale)
    all_caps = [*caps, int(np.asarray(model.slots))]
    max_slots, kv = sim_settings(model, all_caps, cp.mask.shape[0], data.problem)
    exact = PlanEnergy(config.objective, robust, 0, max_slots, kv)
    exact_data = data._replace(params=objective_params(0.0, scale))
    programs = None
    if config.search == "batched" and not robust and config.steps != 0:
        # compile the search while the seeds are built (its KV setting decided by FCFS)
        from sajax.plan_anneal import prepare

        search = search_energy(exact, cp, model, np.arange(cp.mask.shape[0], dtype=np.int32))
        finalists = min(config.cap_finalists, len(caps))
        programs = prepare(search, cp, model, finalists, config, n_real)

    refill_until = None
    if config.time_budget_s is not None:
        refill_until = started + config.refill_share * config.time_budget_s
    elif config.refill_share > 0:
        refill_until = float("inf")
    names, orders, e_seed = build_seeds(
        cp, n_real, model, caps, exact, exact_data, config, refill_until=refill_until
    )
    if programs is None:
        search = search_energy(exact, cp, model, orders[np.argmin(e_seed.min(axis=0))])
    best_seed = names[int(np.argmin(e_seed.min(axis=0)))]
    seed_energy = {k: float(e_seed[:, i].min()) for i, k in enumerate(names)}

    finalists = list(np.argsort(e_seed.min(axis=1), kind="stable")[: config.cap_finalists])
    fin_caps = [caps[i] for i in finalists]
    from sajax.plan_anneal import resolve_chains

    per_cap = resolve_chains(config.chains, n_real, len(fin_caps))
    config = dataclasses.replace(config, chains=per_cap)
    init = np.stack([chain_starts(orders, e_seed[i], per_cap) for i in finalists])
    fin_models = _models_by_cap(model, fin_caps)
    search_data = with_models(data, fin_models)

    stats = {"chains": per_cap * len(fin_caps)}
    if config.search == "batched" and not robust:
        from sajax.plan_anneal import batched_search

        cand, steps, stop, stats = batched_search(
            search, cp, fin_models, init, data, n_real, config, started, key_anneal, programs
        )
    else:
        result, steps, stop = run_search(
            search,
            key_anneal,
            cp.mask.shape[0],
            search_data,
            init,
            n_real,
            config,
            started,
            leave_share=config.descent_share,
        )
        # no time or no steps: the best seed is the plan
        cand = init[:, :1] if result is None else np.asarray(result.chain_best_perm)  # (F, C, N)
        stats["orders_scored"] = int(steps) * per_cap * len(fin_caps)  # one proposal a step
        stats.update(search_stats(result))
    # Exact re-score of every chain's best at its own cap; keep the best seed if it wins.
    e_cand = np.stack(
        [score_orders(exact, cand[f], exact_data, [cap])[0] for f, cap in enumerate(fin_caps)]
    )  # (F, C)
    f, c = np.unravel_index(np.argmin(e_cand), e_cand.shape)
    best_order, best_cap, best_e = cand[f, c], fin_caps[f], float(e_cand[f, c])
    ci, si = np.unravel_index(np.argmin(e_seed), e_seed.shape)
    if float(e_seed[ci, si]) < best_e:
        best_order, best_cap, best_e = orders[si], caps[ci], float(e_seed[ci, si])
    stats["anneal_gain"] = (float(e_seed.min()) - float(e_cand.min())) / max(
        abs(float(e_seed.min())), 1e-30
    )
    cap_energy = {int(caps[i]): float(e_seed[i].min()) for i in range(len(caps))}
    for i, cap in enumerate(fin_caps):
        cap_energy[int(cap)] = float(min(cap_energy[int(cap)], e_cand[i].min()))
    polished = polish(best_order, best_cap, cp, n_real, model, exact, exact_data, config, started)
    won = polished is not None and polished[1] < best_e
    if won:
        best_order, best_e = polished
    descended = 0
    if config.descent_share > 0:
        best_order, best_e, descended = descend(
            best_order, best_e, best_cap, cp, n_real, model, exact, exact_data, config, key, started
        )
    cap_energy[int(best_cap)] = min(cap_energy[int(best_cap)], best_e)
    info = dict(
        best_seed=best_seed,
        seed_energy=seed_energy,
        cap_energy=cap_energy,
        energy=best_e,
        steps=steps,
        stop_reason=stop,
        windows=0,
        data=data,
        energy_fn=exact,
        polished=won,
        descended=descended,
        stats=stats,
    )
    return best_order, int(best_cap), info


def _finish(problem, rows, cp, n_real, model, config, order_c, cap, info, started) -> Plan:
    energy: PlanEnergy = info["energy_fn"]
    cap_model = _np_model(model)._replace(
        slots=np.asarray(cap, dtype=np.asarray(model.slots).dtype)
    )
    first, finish = predict(order_c, cp, cap_model, energy)
    m = _metrics(first, finish, cp)
    live = np.asarray(cp.mask)
    e2e_live = np.asarray(m.e2e_ms, np.float64)[live]

    f_first, f_finish = predict(np.arange(len(live)), cp, _np_model(model), energy)
    fm = _metrics(f_first, f_finish, cp)

    robust_att = float("nan")
    if config.scenarios > 0:
        atts = []
        for out in np.asarray(info["data"].problem.output_len):
            sp = cp._replace(output_len=out)
            sm = _metrics(*predict(order_c, sp, cap_model, energy), cp, out)
            atts.append(float(attainment(sm.met, sm.has_slo, cp.weight, cp.mask)))
        robust_att = float(np.mean(atts))

    size = len(np.asarray(problem.mask))

    def by_row(x, fill, dtype=np.float64):
        out = np.full(size, fill, dtype=dtype)
        out[rows] = np.asarray(x)[:n_real]
        return out

    summary = PlanSummary(
        objective=config.objective,
        attainment=float(attainment(m.met, m.has_slo, cp.weight, cp.mask)),
        goodput=float(goodput(m.met, m.has_slo, m.e2e_ms, cp.weight, cp.mask)),
        mean_e2e_ms=float(np.mean(e2e_live)),
        p99_e2e_ms=float(np.percentile(e2e_live, 99)),
        fcfs_attainment=float(attainment(fm.met, fm.has_slo, cp.weight, cp.mask)),
        fcfs_goodput=float(goodput(fm.met, fm.has_slo, fm.e2e_ms, cp.weight, cp.mask)),
        fcfs_mean_e2e_ms=float(np.mean(np.asarray(fm.e2e_ms, np.float64)[live])),
        best_seed=info["best_seed"],
        seed_energy=info["seed_energy"],
        cap_energy=info["cap_energy"],
        energy=float(info["energy"]),
        inflight_cap=int(cap),
        chains=info.get("stats", {}).get(
            "chains", config.chains if not info["windows"] else config.window_chains
        ),
        steps=int(info["steps"]),
        stop_reason=info["stop_reason"],
        plan_time_s=time.perf_counter() - started,
        windows=int(info["windows"]),
        scenarios=config.scenarios,
        robust_attainment=robust_att,
        polished=bool(info.get("polished", False)),
        descended=int(info.get("descended", 0)),
        **{k: v for k, v in info.get("stats", {}).items() if k != "chains"},
    )
    return Plan(
        order=rows[np.asarray(order_c)[:n_real]].astype(np.int64),
        inflight_cap=int(cap),
        first_token_ms=by_row(m.ttft_ms, np.nan),
        finish_ms=by_row(m.e2e_ms, np.nan),
        ttft_ms=by_row(m.ttft_ms, np.nan),
        tpot_ms=by_row(m.tpot_ms, np.nan),
        e2e_ms=by_row(m.e2e_ms, np.nan),
        slo_met=by_row(m.met, False, bool),
        summary=summary,
    )
