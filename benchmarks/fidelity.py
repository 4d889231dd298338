"""Fidelity and speed of the fast engine model (sajax.simulate) against the reference simulator.

For each profile, a ``paper_mix`` job (default 1,000 requests) is run through the reference
simulator (``sajax.refsim``, exact per iteration) and the fast model under several orders: the
four heuristics and a few random permutations. Reported per order:

- e2e error, two ways: ``mean|fast - ref| / mean(ref)`` and the mean of per-request relative
  errors ``mean(|fast - ref| / ref)``; the same for TTFT;
- predicted attainment under both, and the difference in percentage points;
- the iteration count under both.

Then the evaluation throughput of the fast model: orders per second of one jitted, vmapped call
over ``--chains`` orders (n padded to its bucket), best of ``--repeat``, against the reference
simulator's time for one order. Finally FCFS attainment (reference) over a range of tightness
values, to pick the workload's levels.

    .venv/bin/python benchmarks/fidelity.py                      # prints Markdown tables
    .venv/bin/python benchmarks/fidelity.py --n 300 --random-orders 1 --chains 16   # quick
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import numpy as np

from batch_runner.workloads.synthetic import TIGHTNESS_LEVELS, mix_problem, paper_mix
from sajax import heuristics
from sajax.metrics import attainment, slo_metrics
from sajax.problem import make_problem
from sajax.profiles import load_profile
from sajax.refsim import reference_simulate
from sajax.simulate import simulate


def att(cols, first, finish) -> float:
    m = slo_metrics(
        first,
        finish,
        cols["output_len"],
        cols["slo_e2e_ms"],
        cols["slo_ttft_ms"],
        cols["slo_tpot_ms"],
    )
    return float(attainment(m.met, m.has_slo))


def rel_errors(fast, ref):
    return np.mean(np.abs(fast - ref)) / np.mean(ref), np.mean(np.abs(fast - ref) / ref)


def fidelity(profile: str, args) -> list[str]:
    model = load_profile(profile)
    cols = paper_mix(args.n, seed=args.seed, tightness=args.tightness, model=model)
    problem = mix_problem(cols)
    n, size = args.n, len(problem.mask)
    orders = {name: np.asarray(fn(problem, model)) for name, fn in heuristics.HEURISTICS.items()}
    rng = np.random.default_rng(args.seed + 1)
    for i in range(args.random_orders):
        orders[f"random{i}"] = np.concatenate([rng.permutation(n), np.arange(n, size)])
    rows = []
    worst = dict(e2e=0.0, e2e_req=0.0, att=0.0)
    ref_s = []
    for name, order in orders.items():
        t0 = time.perf_counter()
        ref = reference_simulate(order[:n], cols["input_len"], cols["output_len"], model)
        ref_s.append(time.perf_counter() - t0)
        fast = simulate(order, problem, model)
        first = np.asarray(fast.first_token_ms)[:n]
        finish = np.asarray(fast.finish_ms)[:n]
        e2e, e2e_req = rel_errors(finish, ref.finish_ms)
        ttft, ttft_req = rel_errors(first, ref.first_token_ms)
        a_ref, a_fast = att(cols, ref.first_token_ms, ref.finish_ms), att(cols, first, finish)
        worst["e2e"] = max(worst["e2e"], e2e)
        worst["e2e_req"] = max(worst["e2e_req"], e2e_req)
        worst["att"] = max(worst["att"], abs(a_fast - a_ref) * 100)
        rows.append(
            f"| {profile} | {name} | {e2e:.2e} | {e2e_req:.2e} | {ttft:.2e} | {ttft_req:.2e} "
            f"| {a_ref:.3f} | {a_fast:.3f} | {abs(a_fast - a_ref) * 100:.2f} "
            f"| {ref.n_iterations} / {int(fast.n_iterations)} |"
        )
    rows.append(
        f"| {profile} | **worst** | {worst['e2e']:.2e} | {worst['e2e_req']:.2e} | | | | "
        f"| {worst['att']:.2f} | |"
    )
    return rows, float(np.median(ref_s)), problem, model


def stress(args) -> list[str]:
    """Where the fast model is approximate: long prompts chunked while decoders come and go,
    and a KV capacity that binds. Random orders of a paper_mix job with modified engines."""
    cases = {
        "cpu, budget 256, 8 slots, prompts x4": (
            load_profile("cpu-smollm2-135m")._replace(
                slots=np.int32(8), token_budget=np.int32(256)
            ),
            4,
        ),
        "cpu, budget 64, 8 slots": (
            load_profile("cpu-smollm2-135m")._replace(slots=np.int32(8), token_budget=np.int32(64)),
            1,
        ),
        "gpu, KV capacity 20k tokens": (
            load_profile("gpu-7b-a100")._replace(kv_capacity=np.int32(20_000)),
            1,
        ),
    }
    rows = []
    for name, (model, scale) in cases.items():
        cols = paper_mix(args.n, seed=args.seed, tightness=args.tightness, model=model)
        inp = cols["input_len"] * scale
        problem = make_problem(inp, cols["output_len"])
        rng = np.random.default_rng(args.seed + 2)
        for i in range(2):
            order = np.concatenate([rng.permutation(args.n), np.arange(args.n, len(problem.mask))])
            ref = reference_simulate(order[: args.n], inp, cols["output_len"], model)
            fast = simulate(order, problem, model)
            e2e, e2e_req = rel_errors(np.asarray(fast.finish_ms)[: args.n], ref.finish_ms)
            ttft, ttft_req = rel_errors(
                np.asarray(fast.first_token_ms)[: args.n], ref.first_token_ms
            )
            rows.append(
                f"| {name} | random{i} | {e2e:.2e} | {e2e_req:.2e} | {ttft:.2e} | {ttft_req:.2e} "
                f"| {ref.n_iterations} / {int(fast.n_iterations)} |"
            )
    return rows


def throughput(problem, model, args) -> tuple[float, float]:
    size = len(problem.mask)
    keys = jax.random.split(jax.random.key(args.seed), args.chains)
    orders = jax.vmap(lambda k: jax.random.permutation(k, size))(keys)
    fn = jax.jit(jax.vmap(lambda o: simulate(o, problem, model).finish_ms))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(orders))
    compile_s = time.perf_counter() - t0
    best = np.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(orders))
        best = min(best, time.perf_counter() - t0)
    return args.chains / best, compile_s


def tightness_sweep(args) -> list[str]:
    model = load_profile("gpu-7b-a100")
    rows = []
    for level in sorted(set(args.sweep) | set(TIGHTNESS_LEVELS.values())):
        cols = paper_mix(args.n, seed=args.seed, tightness=level, model=model)
        ref = reference_simulate(np.arange(args.n), cols["input_len"], cols["output_len"], model)
        name = next((k for k, v in TIGHTNESS_LEVELS.items() if v == level), "")
        rows.append(f"| {level:g} | {name} | {att(cols, ref.first_token_ms, ref.finish_ms):.3f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tightness", type=float, default=TIGHTNESS_LEVELS["medium"])
    ap.add_argument("--random-orders", type=int, default=4)
    ap.add_argument("--chains", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profiles", default="gpu-7b-a100,cpu-smollm2-135m")
    ap.add_argument("--sweep", type=float, nargs="*", default=[0.1, 0.5, 1.0, 3.0, 10.0])
    args = ap.parse_args()

    print(f"date {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}")
    print(
        f"jax {jax.__version__} on {jax.default_backend()}, n={args.n}, seed={args.seed}, "
        f"tightness={args.tightness}\n"
    )
    print(
        "| profile | order | e2e mean abs / mean | e2e mean rel | ttft mean abs / mean "
        "| ttft mean rel | attainment ref | attainment fast | diff pp | iterations ref / fast |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    speed = []
    for profile in args.profiles.split(","):
        rows, ref_s, problem, model = fidelity(profile, args)
        print("\n".join(rows))
        speed.append((profile, ref_s, *throughput(problem, model, args)))
    print(
        "\n| stress case | order | e2e mean abs / mean | e2e mean rel | ttft mean abs / mean "
        "| ttft mean rel | iterations ref / fast |\n|---|---|---|---|---|---|---|"
    )
    print("\n".join(stress(args)))
    print(
        f"\n| profile | reference s / order | fast orders/s ({args.chains} vmapped, "
        f"n={args.n} -> {len(problem.mask)}) | speed-up | compile s |"
    )
    print("|---|---|---|---|---|")
    for profile, ref_s, rate, compile_s in speed:
        print(f"| {profile} | {ref_s:.3f} | {rate:,.0f} | {rate * ref_s:,.0f}x | {compile_s:.1f} |")
    print("\n| tightness | level | FCFS attainment (reference, gpu-7b-a100) |\n|---|---|---|")
    print("\n".join(tightness_sweep(args)))


if __name__ == "__main__":
    main()
