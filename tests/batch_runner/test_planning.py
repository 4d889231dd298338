"""``sajax plan`` and ``plan_requests``: request table -> Problem -> plan file."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch_runner.planning import CACHE_ENV, plan_command, problem_from_table


def _table():
    return pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "prompt": ["x" * 40, "y" * 401, None, "z"],
            "messages": [
                None,
                None,
                [{"role": "system", "content": "ok"}, {"role": "user", "content": "hello there"}],
                None,
            ],
            "task": ["chat", "code", "chat", "code"],
            "max_new_tokens": [100, 50, 30, 8],
            "output_tokens_hint": pa.array([20, None, 90, None], pa.int64()),
            "ignore_eos": [False, False, False, True],
            "slo_e2e_ms": pa.array([None, 5000.0, None, 900.0]),
            "slo_ttft_ms": pa.array([800.0, None, None, None]),
            "slo_tpot_ms": pa.array([60.0, None, None, None]),
            "weight": [1.0, 2.0, 1.0, 1.0],
        }
    )


def test_problem_from_table_lengths_and_slos():
    p = problem_from_table(_table())
    # 40 chars -> 10 tokens; 401 -> 101; messages: 13 chars -> 4 tokens + 2 x 4 template tokens
    np.testing.assert_array_equal(p.input_len, [10, 101, 12, 1])
    # hint (capped), else max_new_tokens; ignore_eos always runs to max_new_tokens
    np.testing.assert_array_equal(p.output_len, [20, 50, 30, 8])
    assert np.isinf(p.slo_e2e_ms[0]) and p.slo_e2e_ms[1] == 5000.0
    assert p.slo_ttft_ms[0] == 800.0 and np.isinf(p.slo_ttft_ms[2])
    np.testing.assert_array_equal(p.weight, [1, 2, 1, 1])
    assert p.mask.all()


def test_input_tokens_column_wins_over_the_estimate():
    t = _table().append_column("input_tokens", pa.array([7, 8, 9, 10], pa.int64()))
    np.testing.assert_array_equal(problem_from_table(t).input_len, [7, 8, 9, 10])


def test_plan_command_writes_the_order_with_predictions(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "")  # no persistent compilation cache from a test
    src = tmp_path / "requests.parquet"
    pq.write_table(_table(), src)
    out = tmp_path / "plan.parquet"
    summary = tmp_path / "summary.json"
    rc = plan_command(
        input=src, out=out, engine="sim", policy="sjf", profile="default", summary_json=summary
    )
    assert rc == 0
    plan = pq.read_table(out).to_pydict()
    assert sorted(plan["id"]) == ["a", "b", "c", "d"]
    assert plan["rank"] == [0, 1, 2, 3]
    assert all(e > 0 for e in plan["predicted_e2e_ms"])
    assert set(plan) >= {"predicted_ttft_ms", "predicted_tpot_ms", "predicted_slo_met", "task"}
    info = json.loads(summary.read_text())
    assert info["requests"] == 4 and "attainment_by_task" in info
    assert "fcfs" in capsys.readouterr().out


def test_heuristic_plans_keep_exactly_their_heuristic_order():
    # `sajax plan --policy X` and the FCFS baseline of its summary: the plain heuristic order,
    # never the planner's best seed (blends, relaxed or triage orders would beat FCFS here).
    from batch_runner.planning import POLICY_SEEDS, _heuristic_plan
    from batch_runner.workloads.synthetic import mix_problem, paper_mix
    from sajax import heuristics
    from sajax.profiles import load_profile

    model = load_profile("gpu-7b-a100")
    cols = paper_mix(64, seed=0, tightness=0.55, model=model)
    problem = mix_problem(cols)
    for policy in ("fcfs", "sjf", "edf"):
        result = _heuristic_plan(problem, model, policy)
        fn = getattr(heuristics, POLICY_SEEDS.get(policy, policy))
        expected = np.asarray(fn(problem, model))
        assert result.order.tolist() == expected[expected < 64].tolist(), policy
        assert result.inflight_cap == int(model.slots)


def test_heuristic_plan_of_a_large_job_is_not_annealed_by_windows():
    # above PlanConfig.window rows plan() decomposes into windows; a heuristic plan must not
    from batch_runner.planning import _heuristic_plan
    from sajax import heuristics
    from sajax.engine_model import make_engine_model
    from sajax.planner import PlanConfig
    from sajax.problem import make_problem

    n = PlanConfig().window + 16
    rng = np.random.default_rng(0)
    inp, out = rng.integers(4, 64, n), rng.integers(1, 32, n)
    problem = make_problem(inp, out, slo_e2e_ms=rng.uniform(50, 5_000, n))
    model = make_engine_model(slots=8, token_budget=256, a_ms=5.0, b_ms=0.5, c_ms=0.0)
    result = _heuristic_plan(problem, model, "sjf")
    expected = np.asarray(heuristics.sjf(problem, model))
    assert result.order.tolist() == expected[expected < n].tolist()
