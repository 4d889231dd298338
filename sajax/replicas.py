"""One plan across engine replicas: which replica serves each request, and the order on each.

``plan_replicas(problem, models, config, key)`` takes one ``EngineModel`` per replica (replicas
may differ in speed and slots) and returns, for every request, its replica, and for every
replica its submission order and in-flight cap, with the fast model's predicted timings.

Steps:

1. Seeds. A priority order (``sajax.heuristics``: least slack, EDF, shortest-first, FCFS) is
   dealt to the replicas by an assignment rule, and each replica serves its requests in that
   priority order:

   - ``least_loaded``: in priority order, each request goes to the replica that would finish
     its queue first with it (``argmin_r load_r + work_ir``; ``work_ir`` = the request's share
     of replica r's batched throughput, ``work_ms``);
   - ``round_robin``: request k of the priority order to replica ``k mod R``;
   - ``stratified``: least-loaded within each class of alike requests (``slo_classes``: the
     kind of SLO and a quartile of predicted work), in priority order: every replica gets the
     same mix of SLO kinds, sizes and (in EDF / least-slack order) deadlines, and the same work.
     On equal replicas that is round-robin within each class.

   Every seed is scored exactly (the fast model per replica, ``predict``); the best wins.
2. Per-replica plans (``replica_plans``): the single-engine planner (``sajax.planner.plan``)
   orders each replica's requests (at all its slots unless ``full_caps=False``: then it picks
   the cap too), with an equal share of ``replica_share`` (0.75) of the budget; then, with a
   budget and unless the objective is goodput, the other replicas' predicted misses are
   re-inserted into a replica's hits at their deadline's place while that adds hits, until the
   budget is spent (``refill``, ``sajax.replica_refill``).
3. Joint annealing (``joint``, ``sajax.replica_anneal``; with a budget, only in the time step 2
   leaves): the annealer's state is an order plus a replica per position; its moves move
   requests between replicas as well as within one; every replica is scored by the fast model
   with its own profile. Large jobs go by windows.
4. Makespan polish (``sajax.replica_tail``): the predicted misses are dealt again over the
   replicas, longest first, to the least-loaded (``rebalance``; on for the attainment
   objective), then on each replica they move behind its hits, longest first (``tail_lpt``; on
   unless the objective is ``goodput``), each kept only when it loses no hit and shortens the
   makespan (the last wave is then short requests, not a long one alone).

Each of stages 2-3 replaces the plan before only if it scores better (exact, whole plan), so the
plan is never worse than its best seed under the planner's own model.

    models = [load_profile("gpu-7b-a100")] * 4
    result = plan_replicas(problem, models, ReplicaPlanConfig(time_budget_s=20.0))
    result.replica, result.orders, result.summary["replicas"]
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from sajax import heuristics
from sajax.engine_model import EngineModel
from sajax.metrics import attainment, goodput, problem_metrics
from sajax.objectives.slo import get_objective, objective_params
from sajax.planner import PlanConfig, plan
from sajax.problem import Problem, bucket_size
from sajax.replica_anneal import _pad_problem, joint_anneal
from sajax.replica_refill import refill_across
from sajax.replica_tail import rebalance_misses, tail_longest_first
from sajax.simulate import kv_can_bind, simulate

ASSIGNMENTS = ("least_loaded", "round_robin", "stratified")
WORK_BANDS = 4  # stratified: bands of predicted work per kind of SLO (quantiles)
SEEDS = ("least_slack", "edf", "sjf", "fcfs")


@dataclasses.dataclass(frozen=True)
class ReplicaPlanConfig:
    """What the multi-replica planner does and for how long (plain Python values)."""

    objective: str = "goodput"  # goodput | attainment | tardiness (sajax.objectives.slo)
    time_budget_s: float | None = None  # wall-clock seconds for the whole call
    seeds: tuple[str, ...] = SEEDS  # priority orders (sajax.heuristics)
    assignments: tuple[str, ...] = ASSIGNMENTS  # assignment rules (module doc)
    replica_plans: bool = True  # step 2: the single-engine planner on every replica
    # of the budget left after the seeds, for step 2; step 3 gets what it leaves (1.0: all of
    # it to the per-replica plans, which gained more per second than the joint annealing at
    # 10k requests; benchmarks/results/replicas.md)
    replica_share: float = 0.75
    # then, with a budget, other replicas' misses re-inserted into a replica's hits until the
    # budget is spent (sajax.replica_refill; None: on unless the objective is goodput)
    refill: bool | None = None
    plan_config: PlanConfig | None = None  # step 2's base config (its budget is replaced)
    # step 2 keeps every replica at all its slots: a lower cap can suit one engine's SLOs, but
    # over replicas it slowed them (10k requests, R = 2 / 4: better attainment AND makespan
    # with all slots; benchmarks/results/replicas.md)
    full_caps: bool = True
    joint: bool = True  # step 3: joint annealing over (replica, order)
    window: int = 2048  # requests per joint window
    slack: float = 1.5  # positions per replica in a window, over its share
    chains: int = 4  # joint chains per window
    steps: int = 500  # joint steps per window (a budget may cut it)
    refresh: bool = True  # re-score the whole plan between windows (False: huge jobs)
    # last (sajax.replica_tail): the misses dealt again over the replicas (rebalance_misses),
    # then each replica's misses after its hits, longest first (tail_longest_first); None: on
    # unless the objective is goodput (they cost latency, so G, never hits)
    rebalance: bool | None = None
    tail_lpt: bool | None = None

    def __post_init__(self):
        get_objective(self.objective)
        bad = [a for a in self.assignments if a not in ASSIGNMENTS]
        if bad or not self.assignments:
            raise ValueError(f"assignments must be some of {ASSIGNMENTS}, got {self.assignments}")
        bad = [s for s in self.seeds if s not in heuristics.HEURISTICS]
        if bad or not self.seeds:
            raise ValueError(f"seeds must be some of {sorted(heuristics.HEURISTICS)}: {bad}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if not 0 <= self.replica_share <= 1 or self.window < 2 or self.slack < 1:
            raise ValueError("need 0 <= replica_share <= 1, window >= 2 and slack >= 1")


class ReplicaPlan(NamedTuple):
    """Per-request arrays are indexed by the problem's row (padding: replica -1, NaN)."""

    replica: np.ndarray  # (N,) int32, the replica serving each row
    orders: list[np.ndarray]  # R arrays of int64 rows, each replica's submission order
    inflight_caps: list[int]  # per replica
    first_token_ms: np.ndarray  # (N,) float64, predicted, from t0
    finish_ms: np.ndarray  # (N,) float64, predicted e2e
    slo_met: np.ndarray  # (N,) bool, predicted
    summary: dict[str, Any]  # JSON-ready: overall and per-replica predictions, seeds, stages


def work_ms(problem: Problem, model: EngineModel) -> np.ndarray:
    """(N,) a request's share (ms) of a full engine's time: its tokens' forward cost, its
    decode steps' share of the per-iteration cost, and the context it attends while decoding."""
    inp = np.asarray(problem.input_len, np.float64)
    out = np.asarray(problem.output_len, np.float64)
    a, b, c, d = (float(np.asarray(x)) for x in (model.a_ms, model.b_ms, model.c_ms, model.d_ms))
    slots = max(1, int(model.slots))
    return b * (inp + out) + d * out + out * a / slots + c * out * (inp + out / 2)


def slo_classes(problem: Problem, work: np.ndarray) -> np.ndarray:
    """(N,) int class of each row for ``stratified``: the kind of SLO it has (which of the e2e,
    TTFT and TPOT bounds are set) and its band of predicted work within that kind (quantiles,
    ``WORK_BANDS``); ``work`` is (N,)."""
    p = _np(problem)
    kind = sum(np.isfinite(x).astype(np.int64) << k for k, x in enumerate(p[2:5]))
    band = np.zeros(len(kind), np.int64)
    live = np.asarray(p.mask, bool)
    for k in np.unique(kind[live]):
        sel = live & (kind == k)
        edges = np.quantile(work[sel], np.linspace(0, 1, WORK_BANDS + 1)[1:-1])
        band[sel] = np.searchsorted(edges, work[sel], side="right")
    return kind * WORK_BANDS + band


def assign(rule: str, priority: np.ndarray, work: np.ndarray, classes=None) -> np.ndarray:
    """(N,) replica per row of ``priority`` (rows in priority order) under ``rule``; ``work`` is
    (N, R) per row and replica; ``classes`` (N,) ints, for ``stratified`` (default: one class).
    Rows not in ``priority`` get -1."""
    n, r = work.shape
    replica = np.full(n, -1, np.int32)
    if rule == "round_robin":
        replica[priority] = np.arange(len(priority)) % r
        return replica
    if rule not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {rule!r}; choose one of {ASSIGNMENTS}")
    if rule == "least_loaded":
        load = np.zeros(r)
        for i in priority:
            j = int(np.argmin(load + work[i]))
            replica[i] = j
            load[j] += work[i, j]
        return replica
    _, cls = np.unique(np.zeros(n, np.int64) if classes is None else classes, return_inverse=True)
    if np.allclose(work, work[:, :1]):
        # equal replicas: least-loaded within a class of alike requests is round-robin there
        c = cls[priority]
        by = np.argsort(c, kind="stable")
        start = np.searchsorted(c[by], c[by])  # first position of each row's class
        offset = np.cumsum(np.bincount(c, minlength=c.max() + 1)) - np.bincount(c)
        replica[priority[by]] = (np.arange(len(by)) - start + offset[c[by]]) % r
        return replica
    load = np.zeros((cls.max() + 1, r))
    total = np.zeros(r)
    for i in priority:
        cand = load[cls[i]] + work[i]
        j = int(np.lexsort((total, cand))[0])  # least class load, then least total load
        replica[i] = j
        load[cls[i], j] += work[i, j]
        total[j] += work[i, j]
    return replica


def split_orders(priority: np.ndarray, replica: np.ndarray, r: int) -> list[np.ndarray]:
    """Each replica's rows, in the order they appear in ``priority``."""
    rep = replica[priority]
    return [np.asarray(priority[rep == j], np.int64) for j in range(r)]


def with_slots(model: EngineModel, cap: int) -> EngineModel:
    return model._replace(slots=np.asarray(cap, np.asarray(model.slots).dtype))


def predict(
    orders: Sequence[np.ndarray], problem: Problem, models: Sequence[EngineModel], caps=None
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) predicted first-token and finish times (ms, NaN for rows no replica serves): each
    replica's order simulated by the fast model with its own profile (and cap)."""
    n = len(np.asarray(problem.mask))
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    for j, order in enumerate(orders):
        if len(order) == 0:
            continue
        model = models[j] if caps is None else with_slots(models[j], caps[j])
        sub = _pad_problem(problem, np.asarray(order, np.int64), bucket_size(len(order)))
        kv = kv_can_bind(sub, model)
        t = simulate(np.arange(len(sub.mask), dtype=np.int32), sub, model, kv=kv)
        first[order] = np.asarray(t.first_token_ms, np.float64)[: len(order)]
        finish[order] = np.asarray(t.finish_ms, np.float64)[: len(order)]
    return first, finish


def energy_of(first, finish, problem: Problem, objective: str, params) -> float:
    """The objective over every served row (NumPy; the same function the annealer uses)."""
    live = np.isfinite(finish)
    p = Problem(*(np.asarray(x)[live] for x in problem))
    return float(get_objective(objective)(first[live], finish[live], p, params, xp=np))


def plan_replicas(
    problem: Problem,
    models: Sequence[EngineModel],
    config: ReplicaPlanConfig | None = None,
    key: jax.Array | None = None,
) -> ReplicaPlan:
    """The replica and order of every real row of ``problem`` on ``models`` (module doc)."""
    config = config or ReplicaPlanConfig()
    started = time.perf_counter()
    key = jax.random.key(0) if key is None else key
    models = list(models)
    r = len(models)
    if r < 1:
        raise ValueError("need at least one replica model")
    mask = np.asarray(problem.mask, bool)
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        raise ValueError("the problem has no real rows (mask is all False)")
    work = np.stack([work_ms(problem, m) for m in models], axis=1)
    scale = float(max(work[rows].sum() / r, 1.0))
    params = objective_params(scale_ms=scale)

    def score(orders, caps):
        first, finish = predict(orders, problem, models, caps)
        return energy_of(first, finish, problem, config.objective, params), first, finish

    caps = [int(m.slots) for m in models]
    classes = (
        slo_classes(problem, work.mean(axis=1)) if "stratified" in config.assignments else None
    )
    seed_energy: dict[str, float] = {}
    best = None
    for name in config.seeds:
        order = np.asarray(heuristics.HEURISTICS[name](problem, models[0]), np.int64)
        order = order[mask[order]]
        for rule in config.assignments:
            orders = split_orders(order, assign(rule, order, work, classes), r)
            e = score(orders, caps)[0]
            seed_energy[f"{rule}/{name}"] = e
            if best is None or e < best[0]:
                best = (e, f"{rule}/{name}", orders)
    energy, best_seed, orders = best
    stages = {"seed": energy}
    stage_s = {"seed": time.perf_counter() - started}

    def left() -> float | None:
        if config.time_budget_s is None:
            return None
        return max(0.0, config.time_budget_s - (time.perf_counter() - started))

    if config.replica_plans:
        budget = None if left() is None else config.replica_share * left()
        new_orders, new_caps = plan_each(problem, models, orders, config, budget, key)
        e = score(new_orders, new_caps)[0]
        stages["replica_plans"] = e
        stage_s["replica_plans"] = time.perf_counter() - started
        if e < energy:
            energy, orders, caps = e, new_orders, new_caps
    refill_info: dict[str, Any] = {}
    by_hits = get_objective(config.objective) is not get_objective("goodput")
    refill = by_hits if config.refill is None else config.refill
    if refill and r > 1 and left() is not None and left() > 0:
        _, first, finish = score(orders, caps)
        orders, first, finish, refill_info = refill_across(
            orders, caps, first, finish, problem, models, work, started + config.time_budget_s
        )
        stages["refill"] = energy_of(first, finish, problem, config.objective, params)
        stage_s["refill"] = time.perf_counter() - started
    joint_info: dict[str, Any] = {}
    if config.joint and r > 1 and (left() is None or left() > 0):
        capped = [with_slots(m, c) for m, c in zip(models, caps, strict=True)]
        new_orders, joint_info = joint_anneal(
            problem,
            capped,
            orders,
            jax.random.fold_in(key, 1),
            objective=config.objective,
            window=config.window,
            slack=config.slack,
            chains=config.chains,
            steps=config.steps,
            time_budget_s=left(),
            params=params,
            whole_times=lambda o: predict(o, problem, capped),
            refresh=config.refresh,
        )
        e = score(new_orders, caps)[0]
        stages["joint"] = e
        stage_s["joint"] = time.perf_counter() - started
        if e < energy:
            energy, orders = e, new_orders
    _, first, finish = score(orders, caps)
    tail_info: dict[str, Any] = {}
    rebalance_info: dict[str, Any] = {}
    rebalance = config.objective == "attainment" if config.rebalance is None else config.rebalance
    if rebalance:  # (tardiness counts how late the misses are: it would not be free there)
        orders, first, finish, rebalance_info = rebalance_misses(
            orders, caps, first, finish, problem, models, work
        )
    if by_hits if config.tail_lpt is None else config.tail_lpt:
        orders, first, finish, tail_info = tail_longest_first(
            orders, caps, first, finish, problem, models, work
        )
    energy = energy_of(first, finish, problem, config.objective, params)
    summary = summarize(problem, orders, caps, first, finish, models)
    summary |= {
        "objective": config.objective,
        "energy": energy,
        "best_seed": best_seed,
        "seed_energy": seed_energy,
        "stage_energy": stages,
        "stage_end_s": stage_s,
        "joint": joint_info,
        "refill": refill_info,
        "rebalance": rebalance_info,
        "tail_lpt": tail_info,
        "plan_time_s": time.perf_counter() - started,
    }
    replica = np.full(len(mask), -1, np.int32)
    for j, o in enumerate(orders):
        replica[o] = j
    met = np.asarray(problem_metrics(first, finish, _np(problem)).met) & np.isfinite(finish)
    return ReplicaPlan(replica, orders, caps, first, finish, met, summary)


def plan_each(problem, models, orders, config: ReplicaPlanConfig, budget, key):
    """Step 2: ``sajax.planner.plan`` on each replica's rows (an equal share of ``budget``);
    each replica's order comes from the planner, not from ``orders`` (only its rows do)."""
    base = config.plan_config or PlanConfig(objective=config.objective)
    out_orders, out_caps = [], []
    busy = [j for j, o in enumerate(orders) if len(o)]
    for j, order in enumerate(orders):
        if len(order) == 0:
            out_orders.append(order)
            out_caps.append(int(models[j].slots))
            continue
        share = None if budget is None else max(budget / len(busy), 1e-3)
        cfg = dataclasses.replace(base, time_budget_s=share)
        if config.full_caps:  # a lower cap can raise attainment but slows the replica down
            cfg = dataclasses.replace(cfg, caps=(int(models[j].slots),))
        # the rows in the problem's own order, not the seed's: on rows sorted by length (sjf)
        # the planner's seed stage overran a 15 s budget 4-8 times (2,500 requests), for no
        # better plan (benchmarks/results/replicas.md)
        order = np.sort(order)
        sub = _pad_problem(problem, order, len(order))
        result = plan(sub, models[j], cfg, key=jax.random.fold_in(key, 100 + j))
        out_orders.append(order[np.asarray(result.order, np.int64)])
        out_caps.append(int(result.inflight_cap))
    return out_orders, out_caps


def summarize(problem, orders, caps, first, finish, models) -> dict[str, Any]:
    """Predicted attainment, G, makespan overall and per replica (load = summed work)."""
    p = _np(problem)
    m = problem_metrics(first, finish, p)
    live = np.isfinite(finish)

    def block(sel) -> dict[str, Any]:
        sel = sel & live
        if not sel.any():
            return {"requests": 0, "attainment": float("nan"), "makespan_ms": 0.0}
        return {
            "requests": int(sel.sum()),
            "attainment": float(attainment(m.met[sel], m.has_slo[sel], p.weight[sel])),
            "goodput": float(goodput(m.met[sel], m.has_slo[sel], finish[sel], p.weight[sel])),
            "mean_e2e_ms": float(np.mean(finish[sel])),
            "makespan_ms": float(np.max(finish[sel])),
        }

    per = []
    for j, o in enumerate(orders):
        sel = np.zeros(len(live), bool)
        sel[o] = True
        entry = block(sel)
        entry |= {"inflight_cap": int(caps[j]), "work_ms": float(work_ms(p, models[j])[o].sum())}
        per.append(entry)
    return {**block(np.ones(len(live), bool)), "replicas": per}


def _np(problem: Problem) -> Problem:
    return Problem(*(np.asarray(x) for x in problem))
