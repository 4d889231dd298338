"""Multi-replica jobs on a local Ray (started once for this module, num_cpus=2).

Invariant in every case: the output has every input row exactly once, in input order, and its
``replica`` column names a replica that ran it (never one that had died before the row ended).
"""

from __future__ import annotations

import collections
import random
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_runner import checkpoint, ray_pool
from batch_runner.engines.base import EngineRequest
from batch_runner.errors import ConfigError
from batch_runner.job import EngineDied, JobConfig, run_job

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install -e '.[ray]')")

N = 48


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def paths(tmp_path):
    src = tmp_path / "requests.parquet"
    pq.write_table(
        pa.table(
            {
                "id": [f"q{i:02d}" for i in range(N)],
                "prompt": [f"prompt number {i} " * (1 + i % 5) for i in range(N)],
                "max_new_tokens": [8 + (i % 4) * 8 for i in range(N)],
                "slo_e2e_ms": [2000.0 + 100 * i for i in range(N)],
                "tag": list(range(N)),
            }
        ),
        src,
    )
    return src, tmp_path / "out" / "results.parquet"


def _config(paths, **kw):
    src, out = paths
    kw.setdefault("policy", "edf")
    kw.setdefault("engine", "sim")
    kw.setdefault("checkpoint_rows", 4)
    kw.setdefault("checkpoint_min_seconds", 0.0)
    return JobConfig(input=src, out=out, quiet=True, **kw)


def _check_complete(out, replicas: int) -> pa.Table:
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"q{i:02d}" for i in range(N)]
    assert table.column("tag").to_pylist() == list(range(N))
    assert table.column("error").null_count == N
    assert set(table.column("replica").to_pylist()) <= set(range(replicas))
    assert not checkpoint.parts_dir_for(out).exists()
    return table


def _kill_after(monkeypatch, k: int, victim: int):
    """Wrap run_on_replicas so that replica ``victim`` is killed after the k-th result."""
    real = ray_pool.run_on_replicas
    seen = {"n": 0, "killed_at": None}

    def wrapped(pool, *args, on_result, **kw):
        def hook(m, j):
            on_result(m, j)
            seen["n"] += 1
            if seen["n"] == k:
                seen["killed_at"] = k
                pool.kill(victim)

        return real(pool, *args, on_result=hook, **kw)

    monkeypatch.setattr(ray_pool, "run_on_replicas", wrapped)
    return seen


def test_sim_job_on_three_replicas_plans_across_them(local_ray, paths):
    config = _config(paths, replicas=3, policy="sajax", time_budget=4.0, summary_json=None)
    summary = run_job(config)
    table = _check_complete(paths[1], 3)
    counts = collections.Counter(table.column("replica").to_pylist())
    assert len(counts) == 3 and min(counts.values()) >= N // 6  # every replica served
    assert [r["rows"] for r in summary["replicas"]] == [counts[j] for j in range(3)]
    assert summary["plan"]["replicas"] == 3 and summary["plan"]["dead_replicas"] == []
    assert all(r["predicted_attainment"] is not None for r in summary["replicas"])


def test_killed_actor_has_its_requests_replanned_on_the_survivors(local_ray, paths, monkeypatch):
    monkeypatch.setenv("SAJAX_SIM_PACE", "20")
    rng = random.Random(7)
    k, victim = rng.randint(2, N // 2), rng.randrange(3)
    seen = _kill_after(monkeypatch, k, victim)
    summary = run_job(_config(paths, replicas=3))
    table = _check_complete(paths[1], 3)
    assert seen["killed_at"] == k
    assert summary["plan"]["dead_replicas"] == [victim]
    assert summary["plan"]["replans"] == 1
    served = table.column("replica").to_pylist()
    assert served.count(victim) < k  # rows it finished before it died, nothing after
    assert summary["replicas"][victim]["died"] is True


def test_every_replica_dead_exits_3_and_resume_finishes_the_job(local_ray, paths, monkeypatch):
    monkeypatch.setenv("SAJAX_SIM_PACE", "20")
    real = ray_pool.run_on_replicas

    def kill_all(pool, *args, on_result, **kw):
        def hook(m, j):
            on_result(m, j)
            for v in range(len(pool)):
                pool.kill(v)

        return real(pool, *args, on_result=hook, **kw)

    monkeypatch.setattr(ray_pool, "run_on_replicas", kill_all)
    with pytest.raises(EngineDied) as err:
        run_job(_config(paths, replicas=2))
    assert err.value.exit_code == 3 and "--resume" in err.value.message
    saved = checkpoint.load_parts(checkpoint.parts_dir_for(paths[1]))
    assert 1 <= saved.num_rows < N
    monkeypatch.setattr(ray_pool, "run_on_replicas", real)
    summary = run_job(_config(paths, replicas=2, resume=True))
    _check_complete(paths[1], 2)
    assert summary["runs"] == 2


def test_pool_driver_loses_and_doubles_nothing_over_random_kills(local_ray):
    """The driver alone, paced sim actors, a random replica killed at a random point."""
    rng = random.Random(3)
    n = 120
    requests = {
        f"r{i}": EngineRequest(id=f"r{i}", prompt="x" * 40, max_new_tokens=16) for i in range(n)
    }
    ids = list(requests)
    ranks = {rid: i for i, rid in enumerate(ids)}
    for _ in range(2):
        pool = ray_pool.ReplicaPool(
            ray, [{"engine": "sim", "profile": "default", "sim_pace": 20}] * 3
        )
        got: list[tuple[str, int]] = []
        k, victim = rng.randint(1, n - 20), rng.randrange(3)

        def on_result(m, j, k=k, victim=victim, pool=pool, got=got):
            got.append((m.id, j))
            if len(got) == k:
                pool.kill(victim)

        def replan(todo, survivors):
            return {s: todo[i :: len(survivors)] for i, s in enumerate(survivors)}

        try:
            run = ray_pool.run_on_replicas(
                pool,
                requests,
                [ids[j::3] for j in range(3)],
                ranks,
                [4] * 3,
                replan=replan,
                on_result=on_result,
            )
        finally:
            pool.shutdown()
        counts = collections.Counter(i for i, _ in got)
        assert set(counts) == set(ids) and max(counts.values()) == 1
        assert run.dead == [victim]
        # the victim's rows: at most those received by the batch that held the k-th result
        mine = [i for i, j in got if j == victim]
        assert len(mine) < len(ids[victim::3]) or run.replans == 0


@pytest.mark.llamacpp
def test_two_llamacpp_actors_with_one_thread_each(local_ray, paths):
    pytest.importorskip("llama_cpp")
    config = _config(paths, replicas=2, engine="llamacpp", slots=2)
    config.threads = 1  # read by the replicas' engine options
    src = paths[0]
    pq.write_table(pq.read_table(src).slice(0, 6), src)  # a short job: 6 requests
    run_job(config)
    table = pq.read_table(paths[1])
    assert table.num_rows == 6 and table.column("error").null_count == 6
    assert set(table.column("replica").to_pylist()) == {0, 1}
    assert all(t for t in table.column("output_text").to_pylist())
    assert set(table.column("engine").to_pylist()) == {"llamacpp"}


def test_the_single_engine_path_never_imports_ray(paths):
    code = (
        "import sys; from batch_runner.job import JobConfig, run_job; "
        f"run_job(JobConfig(input={str(paths[0])!r}, out={str(paths[1])!r}, engine='sim', "
        "policy='fcfs', quiet=True)); assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert pq.read_table(paths[1]).num_rows == N


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install"):
        ray_pool.require_ray()


def test_replica_profiles_must_name_one_per_replica(paths):
    from batch_runner.replica_job import replica_options

    with pytest.raises(ConfigError, match="one per replica"):
        replica_options(_config(paths, replicas=3, replica_profiles="cpu,gpu"))


def test_replica_options_give_each_replica_its_profile_and_a_gpu_engine_a_gpu(paths):
    from batch_runner.replica_job import replica_options

    opts = replica_options(_config(paths, replicas=2, replica_profiles="gpu, cpu"))
    assert [o["profile"] for o in opts] == ["gpu", "cpu"]
    assert all(o["engine"] == "sim" and "num_gpus" not in o for o in opts)
    gpu = replica_options(_config(paths, replicas=2, engine="turbomind"))
    assert [o["num_gpus"] for o in gpu] == [1, 1]
