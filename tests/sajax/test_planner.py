"""The planner: valid plans, determinism, quality against FCFS and brute force, the budget."""

from __future__ import annotations

import dataclasses
import itertools
import time

import jax
import numpy as np
import pytest

from sajax.engine_model import make_engine_model
from sajax.metrics import attainment, slo_metrics
from sajax.planner import PlanConfig, PlanEnergy, chain_starts, compact, plan, score_orders
from sajax.planner import make_data as planner_data
from sajax.problem import make_problem
from sajax.refsim import reference_simulate
from sajax.robust import length_scenarios
from sajax.triage import (
    attainment_upper_bound,
    hit_set_descent,
    max_on_time,
    moore_hodgson,
    on_time_set,
    pull_forward,
    push_back,
    relaxed_order,
    triage,
)

MODEL = make_engine_model(slots=4, token_budget=64, a_ms=5.0, b_ms=0.5, c_ms=0.001)
# One shape for every test (bucket 64, 4 chains, 32-step chunks): compiled once per session.
FAST = PlanConfig(chains=4, steps=256, chunk_size=32, cap_finalists=1)


def _instance(n, seed, tight=2.0):
    rng = np.random.default_rng(seed)
    inp = rng.integers(4, 120, n)
    out = rng.integers(1, 40, n)
    alone = 5.0 * out + 0.5 * (inp + out)
    slo = alone + rng.uniform(0.2, 1.0, n) * alone.sum() / 4 / tight
    return inp, out, slo


def _reference_attainment(order, cap, inp, out, slo):
    m = MODEL._replace(slots=np.int32(cap))
    ref = reference_simulate(order, inp, out, m)
    met = slo_metrics(ref.first_token_ms, ref.finish_ms, out, slo, np.inf, np.inf)
    return float(attainment(met.met, met.has_slo))


def test_plan_is_a_permutation_of_the_real_rows_and_timings_are_by_row():
    inp, out, slo = _instance(20, 0)
    problem = make_problem(inp, out, slo_e2e_ms=slo)  # padded to 64 rows
    assert problem.mask.sum() == 20 and len(problem.mask) > 20
    result = plan(problem, MODEL, FAST, jax.random.key(0))
    assert sorted(result.order.tolist()) == list(range(20))
    assert 1 <= result.inflight_cap <= 4
    assert np.all(np.isnan(result.e2e_ms[20:])) and not result.slo_met[20:].any()
    # predicted timings are the fast model's at the chosen order and cap, by row
    ref = reference_simulate(result.order, inp, out, MODEL._replace(slots=result.inflight_cap))
    np.testing.assert_allclose(result.finish_ms[:20], ref.finish_ms, rtol=1e-3)
    assert result.summary.attainment == pytest.approx(result.slo_met[:20].mean(), abs=1e-6)
    assert result.summary.steps == 256 and result.summary.stop_reason == "steps"


def test_plan_is_deterministic_for_a_key():
    inp, out, slo = _instance(24, 1)
    problem = make_problem(inp, out, slo_e2e_ms=slo)
    a = plan(problem, MODEL, FAST, jax.random.key(7))
    b = plan(problem, MODEL, FAST, jax.random.key(7))
    np.testing.assert_array_equal(a.order, b.order)
    assert a.inflight_cap == b.inflight_cap
    assert a.summary.energy == b.summary.energy


def test_plan_beats_fcfs_on_a_tight_instance_by_the_reference():
    inp, out, slo = _instance(40, 2, tight=4.0)
    problem = make_problem(inp, out, slo_e2e_ms=slo)
    result = plan(problem, MODEL, FAST, jax.random.key(0))
    fcfs = _reference_attainment(np.arange(40), 4, inp, out, slo)
    ours = _reference_attainment(result.order, result.inflight_cap, inp, out, slo)
    assert ours > fcfs + 0.1, (ours, fcfs)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_plan_finds_the_brute_force_optimum_at_n6(seed):
    inp, out, slo = _instance(6, seed, tight=3.0)
    problem = make_problem(inp, out, slo_e2e_ms=slo)
    config = PlanConfig(chains=4, steps=256, chunk_size=32, cap_finalists=1, caps=(4,))
    result = plan(problem, MODEL, config, jax.random.key(seed))
    _, cp = compact(problem)
    energy = PlanEnergy("goodput", False, 0, 4, False)
    data = planner_data(cp, MODEL, config, None, 1.0)
    perms = np.array(list(itertools.permutations(range(6))), np.int32)
    full = np.concatenate([perms, np.broadcast_to(np.arange(6, 64), (len(perms), 58))], axis=1)
    best = score_orders(energy, full, data, [4]).min()
    assert result.summary.energy == pytest.approx(float(best), rel=1e-6)


def test_time_budget_is_honoured_loosely():
    inp, out, slo = _instance(30, 6)
    problem = make_problem(inp, out, slo_e2e_ms=slo)
    plan(problem, MODEL, FAST)  # compile first: the budget below is then search time
    t0 = time.perf_counter()
    result = plan(
        problem, MODEL, dataclasses.replace(FAST, steps=None, time_budget_s=1.5), jax.random.key(1)
    )
    took = time.perf_counter() - t0
    assert took < 1.5 * 2 + 1.0
    assert result.summary.steps > 0
    assert sorted(result.order.tolist()) == list(range(30))


def test_robust_mode_scores_scenarios_and_reports_their_attainment():
    inp, out, slo = _instance(16, 8)
    problem = make_problem(inp, out, slo_e2e_ms=slo)
    config = PlanConfig(chains=4, steps=64, chunk_size=32, cap_finalists=1, scenarios=3)
    result = plan(problem, MODEL, config, jax.random.key(2))
    assert sorted(result.order.tolist()) == list(range(16))
    assert 0.0 <= result.summary.robust_attainment <= 1.0
    scen = length_scenarios(jax.random.key(0), out, 5, 0.5)
    assert scen.shape == (5, 16) and np.all(scen >= 1)
    np.testing.assert_array_equal(scen[0], out)


def _most_on_time(work, deadline) -> int:
    """Brute force of ``1 || sum U_j``: the largest subset that, run in deadline order, is on
    time."""
    best = 0
    for mask in itertools.product([False, True], repeat=len(work)):
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(deadline[idx])]
        if np.all(np.cumsum(work[idx]) <= deadline[idx]):
            best = max(best, len(idx))
    return best


def test_triage_and_moore_hodgson_push_misses_back_and_keep_a_permutation():
    order = np.array([0, 1, 2, 3, 4, 5])
    met = np.array([True, False, True, False, True, True])
    alone = np.array([1.0, 9.0, 1.0, 2.0, 1.0, 1.0])
    out = triage(order, met, alone, 5)
    np.testing.assert_array_equal(out, [0, 2, 4, 3, 1, 5])  # misses shortest-first, pad kept

    # A toy met_fn: a request meets iff the summed alone-time up to it is <= 3.
    def met_fn(o):
        done = np.cumsum(alone[o])
        met = np.zeros(len(o), bool)
        met[o] = done <= 3.0
        return met

    mh = moore_hodgson(order, met_fn, alone, 6, per_round=1)
    assert sorted(mh.tolist()) == list(range(6))
    assert met_fn(mh).sum() == 3  # the optimum: three unit jobs


def _one_machine(work, deadline):
    def met_fn(o):  # one machine: met iff finished by the deadline
        met = np.zeros(len(o), bool)
        real = o[: len(work)]
        met[real] = np.cumsum(work[real]) <= deadline[real]
        return met

    return met_fn


def _random_one_machine(rng, n):
    """(work, deadline, a random start order) of a random one-machine instance."""
    work = rng.uniform(1, 10, n)
    deadline = rng.uniform(5, 40, n)
    return work, deadline, rng.permutation(n).astype(np.int32)


def test_push_back_leaves_no_miss_ahead_of_a_hit_and_never_loses_a_hit_on_one_machine():
    # One machine, requests in order, met iff finished by the deadline: pushing a miss back
    # only makes the requests behind it earlier, so the hits can only grow.
    rng = np.random.default_rng(3)
    for trial in range(20):
        n = 12
        work, deadline, start = _random_one_machine(rng, n)
        met_fn = _one_machine(work, deadline)
        out = push_back(start, met_fn, work, n, per_round=1 + trial % 3)
        assert sorted(out.tolist()) == list(range(n))
        met = met_fn(out)[out]
        hits = np.flatnonzero(met)
        assert len(hits) == 0 or met[: hits[-1]].all()  # no miss ahead of the last hit
        assert met.sum() >= met_fn(start).sum()


def test_push_back_stops_when_only_moved_back_requests_miss_ahead_of_a_hit():
    # Moved-back rows sit at the tail shortest first; a short one there that misses ahead of a
    # longer one that hits must not make push_back spin until max_rounds.
    work = np.array([10.0, 1.0, 3.0, 1.0])
    deadline = np.array([1.0, 0.5, 12.5, 100.0])
    calls = []
    one_machine = _one_machine(work, deadline)

    def met_fn(o):
        calls.append(1)
        return one_machine(o)

    out = push_back(np.arange(4, dtype=np.int32), met_fn, work, 4, per_round=4)
    assert sorted(out.tolist()) == [0, 1, 2, 3]
    assert len(calls) <= 4  # each round moves at least one request back


def test_pull_forward_starts_shortest_first_and_pulls_a_late_hit_only_as_far_as_it_needs():
    # Row 0 (work 5) is on time only near the front; rows 1-3 have no deadline; row 4 is padding.
    work = np.array([5.0, 1.0, 2.0, 3.0])
    deadline = np.array([7.0, np.inf, np.inf, np.inf])
    order = np.array([0, 1, 2, 3, 4], np.int32)
    rounds = pull_forward(order, _one_machine(work, deadline), work, 4, first_step=1.0)
    # shortest first; row 0 late (finishes at 11) -> one place forward (10) -> two more (8)
    # -> four more: first, on time (5) and done. Padding stays at the tail throughout.
    assert [r.tolist() for r in rounds] == [
        [1, 2, 3, 0, 4],
        [1, 2, 0, 3, 4],
        [0, 1, 2, 3, 4],
    ]
    # only as far as needed: with a looser deadline it stops one place from the back
    loose = _one_machine(work, np.array([10.0, *deadline[1:]]))
    rounds = pull_forward(order, loose, work, 4, first_step=1.0)
    assert [r.tolist() for r in rounds] == [[1, 2, 3, 0, 4], [1, 2, 0, 3, 4]]


def test_pull_forward_rounds_are_permutations_and_keep_hits_they_can():
    rng = np.random.default_rng(11)
    for _ in range(20):
        n = 10
        work, deadline, start = _random_one_machine(rng, n)
        met_fn = _one_machine(work, deadline)
        rounds = pull_forward(start, met_fn, work, n, rounds=30)
        assert 1 <= len(rounds) <= 30
        for r in rounds:
            assert sorted(r.tolist()) == list(range(n))
        np.testing.assert_array_equal(rounds[0], np.argsort(work, kind="stable"))
        if len(rounds) < 30:  # it stopped early: every hit of the start is on time again
            assert np.all(met_fn(rounds[-1])[met_fn(start)])


def test_latency_polish_is_kept_only_when_it_scores_better():
    for seed, polishes in ((14, True), (12, False)):  # (checked: it helps one, not the other)
        inp, out, slo = _instance(40, seed, tight=1.0)
        problem = make_problem(inp, out, slo_e2e_ms=slo)
        # the classic search: the polish's effect on these instances was checked with it
        no_descent = dataclasses.replace(FAST, descent_share=0.0, search="classic")
        polished = plan(problem, MODEL, no_descent, jax.random.key(5))
        off = plan(
            problem, MODEL, dataclasses.replace(no_descent, polish_rounds=0), jax.random.key(5)
        )
        assert polished.summary.polished == polishes and not off.summary.polished
        if polishes:
            assert polished.summary.energy < off.summary.energy
        else:
            np.testing.assert_array_equal(polished.order, off.order)
    # a shortest-first plan is its own first polish round: a tie, not reported as polished
    inp, out, slo = _instance(40, 12, tight=0.01)
    problem = make_problem(inp, out, slo_e2e_ms=slo)
    sjf = plan(problem, MODEL, dataclasses.replace(FAST, steps=0, seeds=("sjf",), blends=False))
    assert sjf.summary.best_seed == "sjf" and not sjf.summary.polished


def _hits_then_latency(work, deadline):
    """energy_fn for one machine: minus the hits, plus a small summed-finish-time tie-break."""
    met_fn = _one_machine(work, deadline)

    def energy_fn(orders):
        out = []
        for o in orders:
            real = o[: len(work)]
            finish = np.cumsum(work[real])
            out.append(-met_fn(o).sum() + 1e-3 * finish.sum())
        return np.array(out)

    return met_fn, energy_fn


def test_hit_set_descent_swaps_a_long_hit_for_short_misses():
    # Row 0 (work 10) is on time only first; rows 1-3 (work 1) only if they come before it.
    work = np.array([10.0, 1.0, 1.0, 1.0])
    deadline = np.array([10.0, 2.0, 3.0, 4.0])
    met_fn, energy_fn = _hits_then_latency(work, deadline)
    start = np.array([0, 1, 2, 3, 4, 5], np.int32)  # rows 4, 5: padding
    order, energy, rounds, improved = hit_set_descent(
        start, met_fn, energy_fn, 4, np.random.default_rng(0), batch=8, rounds=50
    )
    assert order[4:].tolist() == [4, 5] and sorted(order[:4].tolist()) == [0, 1, 2, 3]
    assert met_fn(order).sum() == max_on_time(work, deadline) == 3
    assert energy == pytest.approx(float(energy_fn(order[None])[0]))
    assert 1 <= improved <= rounds <= 50


def test_hit_set_descent_never_worsens_and_stops_on_rounds_deadline_or_no_miss():
    rng = np.random.default_rng(21)
    for _ in range(20):
        n = 9
        work, deadline, start = _random_one_machine(rng, n)
        met_fn, energy_fn = _hits_then_latency(work, deadline)
        e0 = float(energy_fn(start[None])[0])
        order, energy, rounds, _ = hit_set_descent(
            start, met_fn, energy_fn, n, rng, batch=4, rounds=10
        )
        assert sorted(order.tolist()) == list(range(n))
        assert energy <= e0 and rounds <= 10
        assert energy == pytest.approx(float(energy_fn(order[None])[0]))
    # a hit at the last position with a miss ahead of it (the move must stay in range)
    met_fn, energy_fn = _hits_then_latency(np.array([10.0, 1.0]), np.array([1.0, 100.0]))
    order, _, rounds, _ = hit_set_descent(
        np.array([0, 1], np.int32), met_fn, energy_fn, 2, rng, batch=8, rounds=20
    )
    assert sorted(order.tolist()) == [0, 1] and rounds == 20
    # nothing misses: no round runs
    met_fn, energy_fn = _hits_then_latency(np.ones(3), np.full(3, 10.0))
    assert hit_set_descent(np.arange(3), met_fn, energy_fn, 3, rng, rounds=5)[2] == 0
    # a deadline in the past: no round runs; neither rounds nor deadline: refused
    assert hit_set_descent(np.arange(3), met_fn, energy_fn, 3, rng, deadline=0.0)[2] == 0
    with pytest.raises(ValueError):
        hit_set_descent(np.arange(3), met_fn, energy_fn, 3, rng)


def test_hit_set_descent_skips_a_round_that_would_end_past_its_deadline(monkeypatch):
    # A fake clock: every scoring takes 1 s. Deadline 2.5 s: rounds end at 1 and 2 s; a third
    # would end at 3 s, so it does not start (the old rule, "started before the deadline",
    # ran it).
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    met_fn, score = _hits_then_latency(np.array([10.0, 1.0, 1.0]), np.array([10.0, 2.0, 3.0]))

    def energy_fn(orders):
        clock[0] += 1.0
        return score(orders)

    order = np.arange(3, dtype=np.int32)
    e0 = float(score(order[None])[0])
    rng = np.random.default_rng(0)
    _, _, rounds, _ = hit_set_descent(order, met_fn, energy_fn, 3, rng, deadline=2.5, energy=e0)
    assert rounds == 2 and clock[0] == 2.0


def test_plan_descent_only_lowers_the_energy_and_can_be_turned_off():
    inp, out, slo = _instance(40, 12, tight=1.0)  # (checked: the descent helps here)
    problem = make_problem(inp, out, slo_e2e_ms=slo)
    on = plan(problem, MODEL, FAST, jax.random.key(3))
    off = plan(problem, MODEL, dataclasses.replace(FAST, descent_share=0.0), jax.random.key(3))
    assert off.summary.descended == 0 and on.summary.descended > 0
    assert on.summary.energy < off.summary.energy
    assert on.summary.attainment >= off.summary.attainment
    assert sorted(on.order.tolist()) == list(range(40))


def test_on_time_set_is_feasible_by_deadline_and_as_large_as_the_optimum():
    rng = np.random.default_rng(4)
    for _ in range(30):
        n = int(rng.integers(1, 8))
        work = rng.uniform(1, 10, n)
        deadline = rng.uniform(0, 30, n)
        kept = on_time_set(work, deadline)
        assert np.all(np.diff(deadline[kept]) >= 0)  # by deadline
        assert np.all(np.cumsum(work[kept]) <= deadline[kept])  # each on time
        assert len(kept) == _most_on_time(work, deadline)


def test_relaxed_order_puts_the_relaxations_on_time_set_first_by_deadline():
    inp, out, slo = _instance(20, 5, tight=4.0)
    problem = make_problem(inp, out, slo_e2e_ms=slo)  # padded to 64 rows
    for share in (1, 4):
        order = relaxed_order(problem, MODEL, share)
        assert sorted(order.tolist()) == list(range(len(problem.mask)))
        assert np.all(order[20:] >= 20)  # padding at the tail
        work = MODEL.b_ms * (inp + out - 1) + MODEL.a_ms * out / share
        k = max_on_time(work, slo)
        front = order[:k]
        assert np.all(np.diff(slo[front]) >= 0)
        assert np.all(np.cumsum(work[front]) <= slo[front])
    # at full sharing the front is exactly what the upper bound counts
    assert max_on_time(MODEL.b_ms * (inp + out - 1) + MODEL.a_ms * out / 4, slo) == pytest.approx(
        attainment_upper_bound(problem, MODEL) * 20
    )


def test_plan_seeds_include_relaxed_and_push_back_orders():
    inp, out, slo = _instance(24, 6, tight=4.0)
    problem = make_problem(inp, out, slo_e2e_ms=slo)
    result = plan(problem, MODEL, FAST, jax.random.key(0))
    names = set(result.summary.seed_energy)
    assert {"relaxed_1", "relaxed_4"} <= names  # shares (1, 8, 32) clipped to 4 slots
    assert any(k.startswith("pb_") for k in names)
    # greedy re-insertion runs on the best Moore-Hodgson and the best push-back order
    assert any(k.startswith("refill_mh_") for k in names)
    assert any(k.startswith("refill_pb_") for k in names)
    # the plan is never worse than its best seed under the planner's own model
    assert result.summary.energy <= min(result.summary.seed_energy.values()) + 1e-9
    with pytest.raises(ValueError, match="relaxed_shares"):
        PlanConfig(relaxed_shares=(0,))


def test_chain_starts_are_the_distinct_seeds_best_first_then_repeat():
    orders = np.array([[0, 1, 2], [1, 0, 2], [0, 1, 2], [2, 1, 0]])
    energies = np.array([1.0, 3.0, 0.5, 2.0])  # rows 0 and 2 are the same order
    starts = chain_starts(orders, energies, 4)
    np.testing.assert_array_equal(starts, [[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 1, 2]])
    assert chain_starts(orders, energies, 2).tolist() == [[0, 1, 2], [2, 1, 0]]


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        PlanConfig(chains=0)
    with pytest.raises(ValueError):
        PlanConfig(objective="speed")
    with pytest.raises(ValueError):
        PlanConfig(time_budget_s=0.0)
    with pytest.raises(ValueError):
        PlanConfig(descent_share=1.5)
    with pytest.raises(ValueError):
        PlanConfig(descent_batch=0)


def test_max_on_time_matches_brute_force_on_one_machine():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 7))
        work = rng.uniform(1, 10, n)
        deadline = rng.uniform(0, 25, n)
        assert max_on_time(work, deadline) == _most_on_time(work, deadline)


@pytest.mark.parametrize("seed", [0, 1])
def test_attainment_upper_bound_holds_for_every_order_and_cap(seed):
    # n = 5: every order at every cap, by the reference simulator, stays under the bound;
    # a tight instance so that the bound is below 100 % and means something.
    inp, out, slo = _instance(5, seed, tight=4.0)
    problem = make_problem(inp, out, slo_e2e_ms=slo)
    bound = attainment_upper_bound(problem, MODEL)
    best = max(
        _reference_attainment(np.array(p), cap, inp, out, slo)
        for p in itertools.permutations(range(5))
        for cap in (1, 2, 4)
    )
    assert best <= bound + 1e-9
    assert bound < 1.0
