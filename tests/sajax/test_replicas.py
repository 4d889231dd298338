"""The multi-replica planner: assignment seeds, the joint annealer's encoding and energy, plans."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sajax.engine_model import make_engine_model
from sajax.objectives.slo import objective_params
from sajax.problem import make_problem
from sajax.replica_anneal import (
    _energy_jit,
    _pad_problem,
    decode,
    encode,
    joint_anneal,
    max_slots_of,
    stack_models,
)
from sajax.replica_tail import rebalance_misses
from sajax.replicas import (
    ReplicaPlanConfig,
    assign,
    energy_of,
    plan_replicas,
    predict,
    slo_classes,
    split_orders,
    work_ms,
)

FAST = make_engine_model(slots=4, token_budget=256, a_ms=5.0, b_ms=0.5, c_ms=0.001)
SLOW = make_engine_model(slots=4, token_budget=256, a_ms=15.0, b_ms=1.5, c_ms=0.003)


def _problem(n: int, seed: int = 0, tight: float = 1.0):
    rng = np.random.default_rng(seed)
    inp = rng.integers(8, 120, n)
    out = rng.integers(4, 60, n)
    slo = tight * rng.uniform(300.0, 3000.0, n)
    return make_problem(inp, out, slo_e2e_ms=slo, size=n)


def test_least_loaded_balances_work_and_round_robin_deals_in_turn():
    p = _problem(200)
    work = np.stack([work_ms(p, FAST)] * 3, axis=1)
    order = np.arange(200)
    rep = assign("least_loaded", order, work)
    loads = np.array([work[rep == j, 0].sum() for j in range(3)])
    assert loads.max() - loads.min() <= work[:, 0].max() + 1e-9  # within one request's work
    rr = assign("round_robin", order, work)
    assert np.array_equal(rr, np.arange(200) % 3)


def test_least_loaded_gives_a_faster_replica_more_work():
    p = _problem(300)
    work = np.stack([work_ms(p, FAST), work_ms(p, SLOW)], axis=1)
    rep = assign("least_loaded", np.arange(300), work)
    assert (rep == 0).sum() > 2 * (rep == 1).sum()  # 3x faster: about 3x the requests
    finish = [work[rep == j, j].sum() for j in range(2)]
    assert abs(finish[0] - finish[1]) <= work.max()


def test_encode_decode_round_trip_and_dummies_fill_each_replica():
    chunks = [np.array([5, 2]), np.array([7]), np.array([], np.int64)]
    rows, perm = encode(chunks, ell=3)
    assert sorted(perm.tolist()) == list(range(9))
    back = decode(perm, rows, 3)
    assert [b.tolist() for b in back] == [[5, 2], [7], []]


def test_joint_energy_equals_the_whole_plan_score_in_one_window():
    p = _problem(40, seed=1)
    models = [FAST, SLOW]
    order = np.arange(40)
    orders = split_orders(order, np.arange(40) % 2, 2)
    params = objective_params(scale_ms=1e4)
    first, finish = predict(orders, p, models)
    whole = energy_of(first, finish, p, "goodput", params)
    rows, perm = encode(orders, ell=30)
    sub = _pad_problem(p, rows, 60)
    data = (sub, stack_models(models), np.zeros(2, np.float32), params)
    e = float(
        _energy_jit(
            jnp.asarray(perm), data, r=2, max_slots=max_slots_of(models, 30), objective="goodput"
        )
    )
    assert e == pytest.approx(whole, rel=1e-5)


def test_joint_anneal_keeps_every_request_once_and_never_scores_worse():
    p = _problem(48, seed=2, tight=0.6)
    models = [FAST, FAST, SLOW]
    orders = split_orders(np.arange(48), np.arange(48) % 3, 3)
    params = objective_params(scale_ms=1e4)
    new, info = joint_anneal(
        p,
        models,
        orders,
        jax.random.key(0),
        window=16,
        chains=2,
        steps=64,
        params=params,
        whole_times=lambda o: predict(o, p, models),
    )
    assert sorted(np.concatenate(new).tolist()) == list(range(48))
    assert info["windows"] == 3
    assert info["energy_after"] <= info["energy_before"] + 1e-6


def test_plan_replicas_serves_every_row_once_and_beats_no_seed():
    p = _problem(64, seed=3, tight=0.5)
    cfg = ReplicaPlanConfig(steps=64, chains=2, window=64)
    plan = plan_replicas(p, [FAST, SLOW], cfg, jax.random.key(1))
    allrows = np.concatenate(plan.orders)
    assert sorted(allrows.tolist()) == list(range(64))
    for j, o in enumerate(plan.orders):
        assert np.all(plan.replica[o] == j)
    assert np.all(np.isfinite(plan.finish_ms))
    s = plan.summary
    assert s["energy"] <= min(s["seed_energy"].values()) + 1e-9
    assert len(s["replicas"]) == 2 and sum(r["requests"] for r in s["replicas"]) == 64
    assert s["replicas"][0]["requests"] > s["replicas"][1]["requests"]  # the faster one


def test_plan_replicas_is_deterministic_without_a_budget():
    p = _problem(32, seed=4)
    cfg = ReplicaPlanConfig(steps=32, chains=2, replica_plans=False)
    a = plan_replicas(p, [FAST, FAST], cfg, jax.random.key(2))
    b = plan_replicas(p, [FAST, FAST], cfg, jax.random.key(2))
    assert all(np.array_equal(x, y) for x, y in zip(a.orders, b.orders, strict=True))


def test_bad_config_is_refused_with_the_field_named():
    with pytest.raises(ValueError, match="assignments"):
        ReplicaPlanConfig(assignments=("random",))
    with pytest.raises(ValueError, match="replica model"):
        plan_replicas(_problem(4), [])


def test_makespan_polish_loses_no_hit_and_never_lengthens_the_job():
    p = _problem(96, seed=5, tight=0.3)
    base = ReplicaPlanConfig(
        objective="attainment", replica_plans=False, joint=False, rebalance=False
    )
    off = plan_replicas(p, [FAST, FAST], dataclasses.replace(base, tail_lpt=False))
    on = plan_replicas(p, [FAST, FAST], base)  # None: on for the attainment objective
    assert on.summary["tail_lpt"]["makespan_after_ms"] <= off.summary["makespan_ms"] + 1e-6
    assert on.slo_met.sum() >= off.slo_met.sum()
    assert on.summary["makespan_ms"] <= off.summary["makespan_ms"] + 1e-6
    for o_on, o_off in zip(on.orders, off.orders, strict=True):
        assert sorted(o_on.tolist()) == sorted(o_off.tolist())  # same replicas, reordered only


def _mixed(n: int, seed: int = 0):
    """Half e2e SLOs, half TTFT + TPOT SLOs (two kinds), lengths spread over a decade."""
    rng = np.random.default_rng(seed)
    inp, out = rng.integers(8, 200, n), rng.integers(2, 80, n)
    e2e = np.where(np.arange(n) % 2 == 0, rng.uniform(300.0, 3000.0, n), np.inf)
    ttft = np.where(np.arange(n) % 2 == 1, rng.uniform(100.0, 900.0, n), np.inf)
    tpot = np.where(np.arange(n) % 2 == 1, 50.0, np.inf)
    return make_problem(inp, out, e2e, ttft, tpot, size=n)


def test_slo_classes_split_by_kind_of_slo_and_band_of_work():
    p = _mixed(400)
    work = work_ms(p, FAST)
    cls = slo_classes(p, work)
    kinds = np.arange(400) % 2
    assert not set(cls[kinds == 0]) & set(cls[kinds == 1])  # no class mixes the two kinds
    for c in np.unique(cls):  # within a kind, a class is a band of work
        other = (cls != c) & (kinds == kinds[cls == c][0])
        lo, hi = work[cls == c].min(), work[cls == c].max()
        assert np.all((work[other] <= lo) | (work[other] >= hi))


def test_stratified_deals_every_class_evenly_on_equal_replicas():
    p = _mixed(403, seed=1)
    work1 = work_ms(p, FAST)
    cls = slo_classes(p, work1)
    priority = np.argsort(np.asarray(p.slo_e2e_ms), kind="stable")
    rep = assign("stratified", priority, np.stack([work1] * 3, axis=1), cls)
    assert np.all(rep >= 0)
    counts = np.array([[np.sum((cls == c) & (rep == j)) for j in range(3)] for c in set(cls)])
    assert np.all(counts.max(axis=1) - counts.min(axis=1) <= 1)  # per class, within one
    totals = np.bincount(rep, minlength=3)
    assert totals.max() - totals.min() <= 1  # the classes' remainders go round too


def test_stratified_gives_a_faster_replica_more_of_every_class():
    p = _mixed(300, seed=2)
    work = np.stack([work_ms(p, FAST), work_ms(p, SLOW)], axis=1)
    cls = slo_classes(p, work.mean(axis=1))
    rep = assign("stratified", np.arange(300), work, cls)
    for c in np.unique(cls):
        assert np.sum((cls == c) & (rep == 0)) > np.sum((cls == c) & (rep == 1))


def test_rebalance_moves_misses_off_the_late_replica_and_loses_no_hit():
    p = _problem(120, seed=6, tight=0.2)
    models, caps = [FAST, FAST], [4, 4]
    work = np.stack([work_ms(p, FAST)] * 2, axis=1)
    orders = [np.arange(100), np.arange(100, 120)]  # replica 0 has five times the work
    first, finish = predict(orders, p, models, caps)
    met = np.asarray(plan_met(first, finish, p))
    new, f1, e1, info = rebalance_misses(orders, caps, first, finish, p, models, work)
    assert sorted(np.concatenate(new).tolist()) == list(range(120))
    assert info["kept"] or info["moves"] > 0
    assert np.nanmax(e1) < np.nanmax(finish)  # the late replica gave misses away
    assert info["makespan_after_ms"] == pytest.approx(float(np.nanmax(e1)))
    assert np.asarray(plan_met(f1, e1, p)).sum() >= met.sum()
    again = predict(new, p, models, caps)[1]
    assert np.allclose(again, e1)  # the times returned are the new orders' own
    for o, n in zip(orders, new, strict=True):  # each replica kept its hits, in their order
        hits = o[met[o]]
        assert np.array_equal(n[np.isin(n, hits)], hits)


def plan_met(first, finish, p):
    from sajax.metrics import problem_metrics

    return problem_metrics(first, finish, p).met
