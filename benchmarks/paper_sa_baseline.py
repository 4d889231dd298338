"""The paper-style baseline: single-chain simulated annealing in NumPy (Huang et al., SC'25).

One chain searches the priority sequence and the batch size (in-flight cap) together, as the
paper's scheduler does: a move either swaps two requests (probability ``1 - p_cap``) or picks a
new cap among the candidates (``p_cap``); the energy is ``-G`` (G = SLO hits per second of summed
latency, ``sajax.metrics``); acceptance is Metropolis; cooling is geometric in *wall-clock time*
so that the run ends cold when the budget ends,

    T(t) = T0 * (T1 / T0) ** (t / budget),     T0 = mean |dE| of 32 random swaps,  T1 = T0 / 1000

and every proposal is scored by a full simulation of the order. Which simulator is the
caller's choice (``evaluate(order, cap) -> (first_token_ms, finish_ms)``); the planner benchmark
passes the NumPy reference simulator ``sajax.refsim.reference_simulate`` -- the paper's own
scheduler likewise scores orders with a Python model of the engine.

    result = paper_sa(evaluate, problem_np, caps=[32, 16], time_budget_s=5.0, seed=0)
    result.order, result.cap, result.energy, result.evaluations
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from sajax.metrics import goodput, problem_metrics

Evaluate = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class PaperSAResult(NamedTuple):
    order: np.ndarray  # (n,) int64, best order found
    cap: int  # its in-flight cap
    energy: float  # -G of the best (by the evaluator)
    evaluations: int  # simulations run
    elapsed_s: float


def g_energy(first_ms, finish_ms, problem) -> float:
    """-G of one simulated order (NumPy)."""
    m = problem_metrics(first_ms, finish_ms, problem)
    return -float(goodput(m.met, m.has_slo, m.e2e_ms, problem.weight))


def paper_sa(
    evaluate: Evaluate,
    problem,
    caps: list[int],
    *,
    time_budget_s: float,
    seed: int = 0,
    init_order: np.ndarray | None = None,
    p_cap: float = 0.1,
    energy: Callable | None = None,
) -> PaperSAResult:
    """Anneal (order, cap) for ``time_budget_s`` seconds with one NumPy chain (module doc)."""
    started = time.perf_counter()
    energy = energy or g_energy
    rng = np.random.default_rng(seed)
    n = len(np.asarray(problem.output_len))
    order = np.arange(n) if init_order is None else np.asarray(init_order).copy()
    cap_idx = 0
    caps = list(caps)

    def score(o, c):
        first, finish = evaluate(o, caps[c])
        return energy(first, finish, problem)

    e = score(order, cap_idx)
    evals = 1
    # Initial temperature from the spread of energy changes of random swaps.
    deltas = []
    for _ in range(32):
        i, j = rng.choice(n, 2, replace=False)
        trial = order.copy()
        trial[i], trial[j] = trial[j], trial[i]
        deltas.append(abs(score(trial, cap_idx) - e))
        evals += 1
        if time.perf_counter() - started > 0.2 * time_budget_s:
            break
    t0 = max(float(np.mean(deltas)), 1e-12)
    t1 = t0 / 1000.0
    best, best_cap, best_e = order.copy(), cap_idx, e
    while True:
        elapsed = time.perf_counter() - started
        if elapsed >= time_budget_s:
            break
        temp = t0 * (t1 / t0) ** (elapsed / time_budget_s)
        trial, trial_cap = order, cap_idx
        if len(caps) > 1 and rng.random() < p_cap:
            trial_cap = int(rng.integers(len(caps)))
        else:
            i, j = rng.choice(n, 2, replace=False)
            trial = order.copy()
            trial[i], trial[j] = trial[j], trial[i]
        e_new = score(trial, trial_cap)
        evals += 1
        if e_new <= e or rng.random() < np.exp(-(e_new - e) / temp):
            order, cap_idx, e = trial, trial_cap, e_new
            if e < best_e:
                best, best_cap, best_e = order.copy(), cap_idx, e
    return PaperSAResult(
        order=best.astype(np.int64),
        cap=int(caps[best_cap]),
        energy=float(best_e),
        evaluations=evals,
        elapsed_s=time.perf_counter() - started,
    )
