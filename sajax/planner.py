"""The planner: an SLO-aware submission order and in-flight cap for one batch job.

``plan(problem, model, config, key)`` searches the order ``pi`` (a permutation of the real rows)
and the in-flight cap ``s <= model.slots`` that minimise an SLO energy (``sajax.objectives.slo``;
default ``-G``, the paper's n / t) of the fast engine model's predicted timings::

    min_{pi, s}  E( simulate(pi, problem, model with slots = s) )

Steps:

1. Seeds (``build_seeds``). Heuristic orders (FCFS, shortest-first, earliest-deadline, least
   slack from ``sajax.heuristics``), blends of shortest-first with EDF / least slack, the
   solutions of the attainment bound's one-machine relaxation (``sajax.triage.relaxed_order``:
   what can finish by its deadline first, by deadline); then, over the best few of them, the
   Moore-Hodgson order (``sajax.triage``: the largest request before each predicted miss goes
   to the back, hopeless ones shortest-first) and the ``push_back`` order (each predicted miss
   ahead of a hit goes to the back), then greedy re-insertion of the rejected (``refill``, at
   most ``refill_share`` of the budget). Every
   seed is scored exactly at every candidate cap (``candidate_caps``: slots x 1, 3/4, 1/2, 1/4).
2. Caps. The ``cap_finalists`` caps with the best seed energies are annealed together (one
   ``sajax.anneal_many`` call: the caps are the instance axis), every cap's chains starting from
   the distinct seeds, best first (``chain_starts``). The chains search without the KV-capacity
   check when it provably or empirically does not bind (``sim_settings``, ``search_energy``).
   The best order of each chain is re-scored *exactly* (``tau=0``, KV check) and the best
   (order, cap) pair wins; a seed that beats every annealed order is kept (the plan is never
   worse than its best seed under the planner's own model).
   Then the latency polish (``polish``, ``sajax.triage.pull_forward``): shortest-first with
   the winner's predicted hits pulled forward only as far as they need; a round's order
   replaces the winner only if it scores better (``summary.polished``). Last, the hit-set
   descent (``descend``, ``sajax.triage.hit_set_descent``): rounds of ``descent_batch``
   neighbours that each bring one predicted miss forward among the hits (and often send one
   hit back), scored exactly together, the best kept if it scores better
   (``summary.descended`` counts them). With a budget the annealing leaves it
   ``descent_share`` of its time: at n = 1,000 the annealer runs only ~100 steps per chain in
   10 s, and a uniformly drawn move rarely touches the set of hits.
3. Large jobs (more than ``config.window`` requests) are decomposed: ``sajax.decompose``.

Time budget and determinism. Without ``time_budget_s`` the plan is a deterministic function of
``(problem, model, config, key)`` (bit for bit on one machine). With a budget, the search runs
until the budget ends (compilation included) and its cooling schedule follows the wall clock
(``sajax.anneal``), so the plan depends on the machine's speed. What stays deterministic: the
seeds, the candidate caps and their seed energies, every chain's start and random stream (the
k-th proposal of a chain is the same in every run); the clock decides only how many steps run
and at which temperature, and how many descent rounds run. ``summary.steps`` reports the steps
run. If the budget is used up before the search starts, the best seed is the plan
(``stop_reason == "time_budget"``). Without a budget, ``steps=0`` skips the annealing but not
the polish or the descent's ``descent_rounds`` rounds.

Robust mode (``scenarios=K > 0``) scores every order against K output-length scenarios
(``sajax.robust``) and minimises the mean energy; reported timings are those of the point
prediction (scenario 0), and ``summary.robust_attainment`` is the mean attainment over scenarios.

    cfg = PlanConfig(objective="goodput", time_budget_s=10.0)
    result = plan(problem, model, cfg, key=jax.random.key(0))
    result.order, result.inflight_cap, result.summary.attainment
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sajax.anneal import anneal_many
from sajax.engine_model import EngineModel
from sajax.metrics import attainment, goodput, slo_metrics
from sajax.moves import move_mix
from sajax.objectives.slo import ObjectiveParams, get_objective, objective_params
from sajax.problem import Problem, bucket_size
from sajax.robust import length_scenarios
from sajax.simulate import simulate
from sajax.triage import (
    accepted_count,
    hit_set_descent,
    moore_hodgson,
    pull_forward,
    push_back,
    refill,
    relaxed_order,
)

DEFAULT_SEEDS = ("fcfs", "sjf", "edf", "least_slack")
DEFAULT_STEPS = 2_000  # steps per chain without a time budget
DESCENT_STREAM = 0xDE5C  # fold_in constant of the hit-set descent's random stream
BUDGET_STEPS = 10_000_000  # with a budget: the schedule's length; the budget ends it first


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """What the planner searches and for how long (all plain Python values)."""

    objective: str = "goodput"  # goodput (G, the paper's) | attainment | tardiness
    tau: float = 0.0  # sigmoid width of the met-surrogate during search (0 = exact)
    chains: int = 8  # chains per candidate cap
    steps: int | None = None  # steps per chain; None: 2,000, or with a time budget: until it ends
    time_budget_s: float | None = None  # wall-clock seconds for the whole plan() call
    caps: tuple[int, ...] | None = None  # candidate in-flight caps; None: automatic
    cap_finalists: int = 2  # caps annealed (the best by seed energy)
    seeds: tuple[str, ...] = DEFAULT_SEEDS  # heuristic seed orders (sajax.heuristics)
    blends: bool = True  # also seed with blends of shortest-first and EDF / least slack
    # seeds from the bound's relaxation (sajax.triage.relaxed_order), one per share of an
    # iteration's fixed cost (clipped to the slots); () = none
    relaxed_shares: tuple[int, ...] = (1, 8, 32)
    triage_rounds: int = 3  # > 0: Moore-Hodgson / push-back seeds (sajax.triage); 0: none
    refill_share: float = 0.3  # of the budget, at most, for greedy re-insertion (0 = none)
    polish_rounds: int = 40  # latency polish of the plan (sajax.triage.pull_forward); 0 = off
    # hit-set descent after the annealing (sajax.triage.hit_set_descent; 0 = off): with a
    # budget it gets this share of the time left after the seeds, without one it runs
    # ``descent_rounds`` rounds
    descent_share: float = 0.5
    descent_rounds: int = 32
    descent_batch: int = 32  # neighbours scored per round
    scenarios: int = 0  # robust mode: output-length scenarios per order (0 = point estimate)
    length_sigma: float = 0.5  # log-normal sigma of the scenarios
    window: int = 2_048  # above this many requests, plan in windows (sajax.decompose)
    window_size: int = 512  # requests per window
    window_chains: int = 2  # chains per window
    window_steps: int = 4_000  # steps per chain and pass (the budget may cut it)
    max_passes: int = 4  # window passes (alternately shifted by half a window)
    chunk_size: int = 16  # annealing steps per jitted chunk (a time budget ends between chunks)
    # start / end temperature, as multiples of a small uphill move (the 10 % quantile of
    # uphill deltas seen at the chains' seeds); the seeds are near local optima, where that
    # move is small, hence the hot start (brute force, n <= 8: 10 -> 195-197/200, 50 -> 199-200)
    t_start: float = 50.0
    t_end: float = 0.01
    swap: float = 0.3  # move mix
    insert: float = 0.5
    reverse: float = 0.2

    def __post_init__(self):
        if self.chains < 1 or (self.steps or 0) < 0 or self.chunk_size < 1:
            raise ValueError("need chains >= 1, steps >= 0 and chunk_size >= 1")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if self.scenarios < 0 or self.length_sigma < 0:
            raise ValueError("scenarios and length_sigma must be >= 0")
        if self.caps is not None and (not self.caps or min(self.caps) < 1):
            raise ValueError(f"caps must be a non-empty tuple of ints >= 1, got {self.caps}")
        if not 0.0 <= self.descent_share <= 1.0 or self.descent_rounds < 0:
            raise ValueError("need 0 <= descent_share <= 1 and descent_rounds >= 0")
        if self.descent_batch < 1:
            raise ValueError(f"descent_batch must be >= 1, got {self.descent_batch}")
        if any(int(x) < 1 for x in self.relaxed_shares):
            raise ValueError(f"relaxed_shares must be ints >= 1, got {self.relaxed_shares}")
        get_objective(self.objective)


class PlanSummary(NamedTuple):
    objective: str
    attainment: float  # predicted, fast model, chosen order and cap
    goodput: float  # predicted G (SLO hits per second of summed e2e)
    mean_e2e_ms: float
    p99_e2e_ms: float
    fcfs_attainment: float  # predicted for FCFS at the engine's full slots, for comparison
    fcfs_goodput: float
    fcfs_mean_e2e_ms: float
    best_seed: str  # the seed whose order scored best before annealing
    seed_energy: dict  # {seed name: best energy over caps}
    cap_energy: dict  # {cap: best energy found at that cap}
    energy: float  # exact energy of the plan
    inflight_cap: int
    chains: int
    steps: int  # steps per chain actually run (reproduce with PlanConfig(steps=...))
    stop_reason: str  # "steps" | "time_budget" | "no_search"
    plan_time_s: float
    windows: int  # 0 = one permutation of every request; else windows per pass
    scenarios: int
    robust_attainment: float  # mean attainment over the scenarios (NaN without robust mode)
    polished: bool = False  # the latency polish (pull_forward) beat the best order found before
    descended: int = 0  # improvements the hit-set descent made (after the polish)

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._asdict().items()}


class Plan(NamedTuple):
    """A plan. Per-request arrays are indexed by the problem's row (NaN / False on padding)."""

    order: np.ndarray  # (n_real,) int64, row indices of the real rows in submission order
    inflight_cap: int  # requests in flight at most
    first_token_ms: np.ndarray  # (N,) float64, predicted first-token time from t0
    finish_ms: np.ndarray  # (N,) float64, predicted finish time from t0
    ttft_ms: np.ndarray  # (N,) float64
    tpot_ms: np.ndarray  # (N,) float64
    e2e_ms: np.ndarray  # (N,) float64
    slo_met: np.ndarray  # (N,) bool, predicted
    summary: PlanSummary


# -- the energy of an order ---------------------------------------------------------------


class PlanData(NamedTuple):
    problem: Problem  # (N,) arrays; output_len is (K, N) in robust mode
    model: EngineModel  # the engine with the candidate cap as ``slots``
    params: ObjectiveParams
    offset_ms: Any  # () float32, added to predicted times (a window's start; 0 for a whole job)


def timings(
    order: jax.Array,
    problem: Problem,
    model: EngineModel,
    max_slots: int | None = None,
    kv: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(first_token_ms, finish_ms), (N,) float32 by row, of ``order`` under the fast model."""
    t = simulate(order, problem, model, max_slots=max_slots, kv=kv)
    return t.first_token_ms, t.finish_ms


@dataclasses.dataclass(frozen=True)
class PlanEnergy:
    """``energy(perm, PlanData) -> ()``: hashable, so ``jit`` caches one program per setting."""

    objective: str
    robust: bool
    head: int = 0  # a window's fixed context: the last ``head`` positions run first
    max_slots: int | None = None  # static slot buffer of the simulation (>= every cap)
    kv: bool = True  # whether the simulation checks the KV capacity

    def __call__(self, perm: jax.Array, data: PlanData) -> jax.Array:
        fn = get_objective(self.objective)
        order = jnp.roll(perm, self.head) if self.head else perm

        def one(output_len):
            problem = data.problem._replace(output_len=output_len)
            first, finish = timings(order, problem, data.model, self.max_slots, self.kv)
            return fn(first + data.offset_ms, finish + data.offset_ms, problem, data.params)

        if self.robust:
            return jnp.mean(jax.vmap(one)(data.problem.output_len))
        return one(data.problem.output_len)


SCORE_BATCH = 8  # orders scored per jitted call (a fixed shape: one compile per problem size)


def score_orders(energy: PlanEnergy, orders, data: PlanData, caps=None) -> np.ndarray:
    """(len(caps), k) float32 exact energies of k orders ((k, N) int) at each cap.

    ``caps=None`` scores at ``data.model`` as it is (one row). Orders go through in fixed
    batches of ``SCORE_BATCH`` and the cap is data, so new caps or counts do not recompile.
    """
    orders = np.asarray(orders, np.int32).reshape(-1, np.shape(orders)[-1])
    k = orders.shape[0]
    pad = -k % SCORE_BATCH
    padded = np.concatenate([orders, np.repeat(orders[:1], pad, axis=0)])
    models = [data.model] if caps is None else [with_cap(data.model, c) for c in caps]
    rows = []
    for m in models:
        d = data._replace(model=m)
        parts = [
            np.asarray(_score(energy, jnp.asarray(padded[i : i + SCORE_BATCH]), d))
            for i in range(0, len(padded), SCORE_BATCH)
        ]
        rows.append(np.concatenate(parts)[:k])
    return np.stack(rows)


def with_cap(model: EngineModel, cap: int) -> EngineModel:
    """``model`` (NumPy scalars) with ``slots = cap``."""
    m = _np_model(model)
    return m._replace(slots=np.asarray(cap, dtype=np.asarray(m.slots).dtype))


def _score_impl(energy, orders, data):
    return jax.vmap(energy, in_axes=(0, None))(orders, data)


_score = jax.jit(_score_impl, static_argnums=0)


# -- problem preparation ------------------------------------------------------------------


def _np_problem(problem: Problem) -> Problem:
    return Problem(*(np.asarray(x) for x in problem))


def compact(problem: Problem, bucket: int | None = None) -> tuple[np.ndarray, Problem]:
    """The real rows first, padded to ``bucket`` (default ``sajax.problem.bucket_size``)."""
    p = _np_problem(problem)
    rows = np.flatnonzero(p.mask).astype(np.int64)
    n = len(rows)
    size = bucket or bucket_size(n)
    if size < n:
        raise ValueError(f"bucket {size} is smaller than the {n} real rows")
    pad = size - n

    def take(x, fill, dtype):
        return np.concatenate([x[rows].astype(dtype), np.full(pad, fill, dtype)])

    out = Problem(
        input_len=take(p.input_len, 1, np.int32),
        output_len=take(p.output_len, 1, np.int32),
        slo_e2e_ms=take(p.slo_e2e_ms, np.inf, np.float32),
        slo_ttft_ms=take(p.slo_ttft_ms, np.inf, np.float32),
        slo_tpot_ms=take(p.slo_tpot_ms, np.inf, np.float32),
        weight=take(p.weight, 0.0, np.float32),
        mask=np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]),
    )
    return rows, out


def candidate_caps(slots: int, caps: tuple[int, ...] | None = None) -> list[int]:
    """In-flight caps to try: the given ones (<= slots), else slots and slots * {3/4, 1/2, 1/4}."""
    slots = int(slots)
    if caps is not None:
        chosen = sorted({min(int(c), slots) for c in caps}, reverse=True)
    else:
        chosen = sorted({max(1, round(slots * f)) for f in (1.0, 0.75, 0.5, 0.25)}, reverse=True)
    return chosen


def _models_by_cap(model: EngineModel, caps: list[int]) -> EngineModel:
    m = EngineModel(*(np.asarray(x) for x in model))
    stacked = [np.broadcast_to(x, (len(caps), *np.shape(x))).copy() for x in m]
    stacked[0] = np.asarray(caps, dtype=np.asarray(m.slots).dtype)
    return EngineModel(*stacked)


def _batched(data: PlanData, b: int) -> PlanData:
    """``data`` with everything but the model repeated along a new leading axis of size b."""
    rep = lambda x: np.broadcast_to(np.asarray(x), (b, *np.shape(x)))  # noqa: E731
    return PlanData(
        jax.tree.map(rep, data.problem),
        data.model,
        jax.tree.map(rep, data.params),
        rep(data.offset_ms),
    )


def with_models(data: PlanData, models: EngineModel) -> PlanData:
    """``data`` batched along the leading axis of ``models`` (one instance per model)."""
    b = int(np.shape(models.slots)[0])
    return _batched(data, b)._replace(model=models)


# -- seeds ----------------------------------------------------------------------------------


def seed_orders(problem: Problem, model: EngineModel, names) -> dict[str, np.ndarray]:
    """Heuristic orders of the real rows (positions < n_real), padding rows kept at the tail."""
    from sajax import heuristics

    n_real = int(np.sum(problem.mask))
    size = len(problem.mask)
    out = {}
    for name in names:
        fn = getattr(heuristics, name, None) or getattr(heuristics, f"{name}_order", None)
        if fn is None:
            raise ValueError(f"unknown seed heuristic {name!r} (not in sajax.heuristics)")
        try:
            order = np.asarray(fn(problem, model))
        except TypeError:
            order = np.asarray(fn(problem))
        order = order[order < n_real]
        out[name] = np.concatenate([order, np.arange(n_real, size)]).astype(np.int32)
    return out


def blend_orders(cp: Problem, model: EngineModel, alphas=(0.25, 0.5, 0.75)) -> dict:
    """Orders by ``alpha * rank(urgency) + (1 - alpha) * rank(alone time)``.

    Urgency is the deadline (EDF's key) or the slack (least slack's); ``alpha = 0`` is
    shortest-first and ``alpha = 1`` the deadline heuristic. Ranks are normalised to [0, 1].
    """
    from sajax import heuristics

    live = np.asarray(cp.mask)
    n_real = int(live.sum())
    t = heuristics.alone_time(cp, model)
    alone = np.asarray(t.e2e_ms, np.float64)
    dl = np.asarray(heuristics.deadline(cp), np.float64)
    slack = np.minimum(
        np.asarray(cp.slo_e2e_ms, np.float64) - alone,
        np.asarray(cp.slo_ttft_ms, np.float64) - np.asarray(t.ttft_ms, np.float64),
    )

    def rank(x):
        x = np.where(np.isnan(x), np.inf, x)[:n_real]
        return np.argsort(np.argsort(x, kind="stable"), kind="stable") / max(n_real - 1, 1)

    out = {}
    for name, urgency in (("edf", dl), ("slack", slack)):
        for alpha in alphas:
            key = alpha * rank(urgency) + (1 - alpha) * rank(alone)
            order = np.argsort(key, kind="stable")
            out[f"blend_{name}_{alpha:g}"] = np.concatenate(
                [order, np.arange(n_real, len(live))]
            ).astype(np.int32)
    return out


def build_seeds(
    cp, n_real, model, caps, exact, exact_data, config, mh_top=3, refill_until=None, relaxed_top=1
):
    """Seed orders and their exact energies at every cap.

    Heuristics (``config.seeds``), blends of shortest-first with EDF / least slack
    (``blend_orders``), the relaxation's orders (``relaxed_order``), then Moore-Hodgson and
    ``push_back`` (``sajax.triage``) over the ``mh_top`` best heuristics / blends and the
    ``relaxed_top`` best relaxation orders at each one's best cap, then ``refill`` of the best
    Moore-Hodgson and the best push-back order (if ``refill_until``). Returns (names, orders
    (k, N) int32, energies (caps, k)).
    """
    from sajax import heuristics

    seeds = seed_orders(cp, model, config.seeds)
    if config.blends:
        seeds.update(blend_orders(cp, model))
    for share in sorted({min(int(s), int(np.asarray(model.slots))) for s in config.relaxed_shares}):
        seeds[f"relaxed_{share}"] = relaxed_order(cp, model, share)
    names = list(seeds)
    orders = np.stack([seeds[k] for k in names])
    energies = score_orders(exact, orders, exact_data, caps)
    if config.triage_rounds <= 0 or mh_top <= 0:
        return names, orders, energies
    alone = alone_time_ms(cp, model)
    doomed = np.asarray(heuristics.hopeless(cp, model))
    per_round = max(16, n_real // 64)
    pb_round = max(4, n_real // 256)
    new_names, new_orders, kinds = [], [], []
    # Triage the best mh_top heuristic / blend seeds and the best relaxed_top relaxation seeds
    # (the relaxation's orders often score best and would crowd out the others).
    ranked = np.argsort(energies.min(axis=0), kind="stable")
    relaxed = [i for i in ranked if names[i].startswith("relaxed_")]
    classic = [i for i in ranked if not names[i].startswith("relaxed_")]
    for si in classic[:mh_top] + relaxed[:relaxed_top]:
        cap = caps[int(np.argmin(energies[:, si]))]
        met_fn = cap_met_fn(cp, model, cap, exact)
        new_names.append(f"mh_{names[si]}@{cap}")
        new_orders.append(
            moore_hodgson(orders[si], met_fn, alone, n_real, hopeless=doomed, per_round=per_round)
        )
        new_names.append(f"pb_{names[si]}@{cap}")
        new_orders.append(push_back(orders[si], met_fn, alone, n_real, per_round=pb_round))
        kinds += ["mh", "pb"]
    new_orders = np.stack(new_orders)
    new_e = score_orders(exact, new_orders, exact_data, caps)
    if refill_until is not None:
        # Greedy re-insertion of the rejected requests of the best Moore-Hodgson and the best
        # push-back order (each at its best cap; they often win at different caps), sharing the
        # time left until ``refill_until``.
        best = new_e.min(axis=0)
        picks = [
            int(np.argmin(np.where(np.array(kinds) == kind, best, np.inf))) for kind in ("mh", "pb")
        ]
        for i, k in enumerate(picks):
            t0 = time.perf_counter()
            share = (refill_until - t0) / (len(picks) - i)
            if share <= 0:
                break
            ci = int(np.argmin(new_e[:, k]))
            base, cap_model = new_orders[k], with_cap(model, caps[ci])
            met = predicted_met(base, cp, cap_model, exact)
            data_cap = exact_data._replace(model=cap_model)
            fast = search_energy(exact, cp, model, base)

            def batch_energy(o, fast=fast, data_cap=data_cap):
                return score_orders(fast, o, data_cap)[0]

            n_front = accepted_count(base, met, n_real)
            refilled, _ = refill(base, n_front, n_real, batch_energy, deadline=t0 + share)
            new_names.append(f"refill_{new_names[k]}")
            new_orders = np.concatenate([new_orders, refilled[None]])
            refilled_e = score_orders(exact, refilled[None], exact_data, caps)
            new_e = np.concatenate([new_e, refilled_e], 1)
    return (
        names + new_names,
        np.concatenate([orders, new_orders]),
        np.concatenate([energies, new_e], axis=1),
    )


def chain_starts(orders: np.ndarray, energies: np.ndarray, chains: int) -> np.ndarray:
    """Start orders for ``chains`` chains: the distinct seed orders best-first, then again from
    the best (several seeds often coincide; distinct starts keep the chains apart)."""
    best_first = np.argsort(energies, kind="stable")
    _, first = np.unique(orders[best_first], axis=0, return_index=True)
    distinct = best_first[np.sort(first)]
    return orders[np.resize(distinct, min(chains, len(orders)))]


def search_energy(exact: PlanEnergy, cp: Problem, model: EngineModel, order) -> PlanEnergy:
    """The energy the chains use: ``exact``, or without the KV check when it does not bind.

    The KV check makes a simulation several times slower. If the best seed's timings are the
    same (within 0.1 %) without it, the chains search without it; every candidate is still
    re-scored with ``exact`` before a plan is chosen.
    """
    if not exact.kv:
        return exact
    fast = dataclasses.replace(exact, kv=False)
    m = _np_model(model)
    a = predict(order, cp, m, exact)[1]
    b = predict(order, cp, m, fast)[1]
    live = np.asarray(cp.mask)
    rel = np.max(np.abs(a[live] - b[live]) / np.maximum(a[live], 1.0))
    return fast if rel < 1e-3 else exact


# -- the plan -------------------------------------------------------------------------------


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


def objective_scale(cp: Problem, model: EngineModel) -> float:
    """A latency scale for the attainment tie-break: serial alone-time of every request."""
    return float(max(np.sum(alone_time_ms(cp, model)[np.asarray(cp.mask)]), 1.0))


def alone_time_ms(cp: Problem, model: EngineModel) -> np.ndarray:
    """(N,) e2e of each request alone on an idle engine (the fast model's ``alone_time``)."""
    from sajax import heuristics

    return np.asarray(heuristics.alone_time(cp, model).e2e_ms, np.float64)


def make_data(
    cp: Problem, model: EngineModel, config: PlanConfig, key, scale_ms: float
) -> PlanData:
    """PlanData for the search (robust mode: output_len becomes (K, N) scenarios)."""
    params = objective_params(tau=config.tau, scale_ms=scale_ms)
    prob = _np_problem(cp)
    if config.scenarios > 0:
        out = length_scenarios(key, prob.output_len, config.scenarios, config.length_sigma)
        prob = prob._replace(output_len=out)
    return PlanData(prob, EngineModel(*(np.asarray(x) for x in model)), params, np.float32(0))


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

    refill_until = None
    if config.time_budget_s is not None:
        refill_until = started + config.refill_share * config.time_budget_s
    elif config.refill_share > 0:
        refill_until = float("inf")
    names, orders, e_seed = build_seeds(
        cp, n_real, model, caps, exact, exact_data, config, refill_until=refill_until
    )
    search = search_energy(exact, cp, model, orders[np.argmin(e_seed.min(axis=0))])
    best_seed = names[int(np.argmin(e_seed.min(axis=0)))]
    seed_energy = {k: float(e_seed[:, i].min()) for i, k in enumerate(names)}

    finalists = list(np.argsort(e_seed.min(axis=1), kind="stable")[: config.cap_finalists])
    fin_caps = [caps[i] for i in finalists]
    init = np.stack([chain_starts(orders, e_seed[i], config.chains) for i in finalists])
    fin_models = _models_by_cap(model, fin_caps)
    search_data = with_models(data, fin_models)

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
    # Exact re-score of every chain's best at its own cap; keep the best seed if it wins.
    if result is None:  # no time or no steps: the best seed is the plan
        cand = init[:, :1]
    else:
        cand = np.asarray(result.chain_best_perm)  # (F, C, N)
    e_cand = np.stack(
        [score_orders(exact, cand[f], exact_data, [cap])[0] for f, cap in enumerate(fin_caps)]
    )  # (F, C)
    f, c = np.unravel_index(np.argmin(e_cand), e_cand.shape)
    best_order, best_cap, best_e = cand[f, c], fin_caps[f], float(e_cand[f, c])
    ci, si = np.unravel_index(np.argmin(e_seed), e_seed.shape)
    if float(e_seed[ci, si]) < best_e:
        best_order, best_cap, best_e = orders[si], caps[ci], float(e_seed[ci, si])
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
    )
    return best_order, int(best_cap), info


def descend(order, energy, cap, cp, n_real, model, exact, exact_data, config, key, started):
    """The hit-set descent (``sajax.triage.hit_set_descent``) of ``order`` (exact ``energy``) at
    ``cap``, every neighbour scored exactly, until the budget's final reserve (re-scoring and the
    last simulation), or without a budget for ``config.descent_rounds`` rounds. Returns (order,
    its energy, improvements)."""
    data_cap = exact_data._replace(model=with_cap(model, cap))
    until = _last_stage_deadline(config, started)
    rounds = config.descent_rounds if until is None else None
    # a stream of its own (fold_in(key, 1) is the annealer's key: split(key)[1])
    seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, DESCENT_STREAM))).ravel()
    new_order, energy, _, improved = hit_set_descent(
        order,
        cap_met_fn(cp, model, cap, exact),
        lambda orders: score_orders(exact, orders, data_cap)[0],
        n_real,
        np.random.default_rng(seed),
        batch=config.descent_batch,
        rounds=rounds,
        deadline=until,
        energy=energy,
    )
    return new_order, energy, improved


def polish(order, cap, cp, n_real, model, exact, exact_data, config, started):
    """The latency polish (``sajax.triage.pull_forward``) of ``order`` at ``cap``: its rounds'
    orders scored exactly; returns (best order, its energy), or None (off or no time left)."""
    if config.polish_rounds <= 0:
        return None
    rounds = pull_forward(
        order,
        cap_met_fn(cp, model, cap, exact),
        alone_time_ms(cp, model),
        n_real,
        rounds=config.polish_rounds,
        deadline=_last_stage_deadline(config, started),
    )
    if not rounds:
        return None
    energies = score_orders(exact, np.stack(rounds), exact_data, [cap])[0]
    k = int(np.argmin(energies))
    return rounds[k], float(energies[k])


_timings_jit = jax.jit(timings, static_argnums=(3, 4))


def predict(order, problem: Problem, model: EngineModel, energy: PlanEnergy):
    """(first_token_ms, finish_ms) as float64 NumPy arrays by row (one jitted simulation)."""
    first, finish = jax.device_get(
        _timings_jit(jnp.asarray(order, jnp.int32), problem, model, energy.max_slots, energy.kv)
    )
    return np.asarray(first, np.float64), np.asarray(finish, np.float64)


def predicted_met(order, problem: Problem, model: EngineModel, energy: PlanEnergy) -> np.ndarray:
    """(N,) bool by row: the request meets its SLO under ``predict`` (a triage ``met_fn``)."""
    return np.asarray(_metrics(*predict(order, problem, model, energy), problem).met)


def cap_met_fn(cp: Problem, model: EngineModel, cap: int, energy: PlanEnergy):
    """``predicted_met`` of ``cp`` at in-flight cap ``cap``, as a triage ``met_fn(order)``."""
    return functools.partial(predicted_met, problem=cp, model=with_cap(model, cap), energy=energy)


def sim_settings(
    model: EngineModel, caps: list[int], n: int, problem: Problem | None = None
) -> tuple[int, bool]:
    """Static simulation settings: slot buffer (power of two >= every cap) and KV check.

    The KV check is off when it can never bind: no ``top`` requests together (``top`` = the
    largest cap) reserve more than ``kv_capacity`` tokens. It is then exactly redundant and
    skipping it makes the simulation several times faster.
    """
    top = max(1, min(max(caps), n))
    max_slots = min(1 << (top - 1).bit_length(), max(n, 1))
    kv_cap = int(np.asarray(model.kv_capacity))
    if kv_cap <= 0:
        return max_slots, False
    if problem is None:
        return max_slots, True
    out = np.asarray(problem.output_len).reshape(-1, np.shape(problem.mask)[-1]).max(axis=0)
    need = np.where(np.asarray(problem.mask), np.asarray(problem.input_len) + out, 0)
    worst = int(np.sum(np.sort(need)[::-1][:top]))
    return max_slots, worst > kv_cap


def run_search(
    energy, key, n, data, init, n_valid, config, started, n_valid_batch=None, leave_share=0.0
):
    """``anneal_many`` over the instances of ``data``, within what is left of the budget, less
    ``leave_share`` of it (for a later stage).

    Returns (AnnealResult, steps per chain run, stop reason). With a budget the driver stretches
    its cooling schedule over the remaining seconds (``sajax.anneal``'s ``time_budget_s``).
    """
    mix = move_mix(config.swap, config.insert, config.reverse)
    kwargs = dict(
        chains=config.chains,
        init_perms=init,
        n_valid=n_valid if n_valid_batch is None else n_valid_batch,
        moves=mix,
        chunk_size=config.chunk_size,
        warmup_chunks=0,
        temperature_range=(config.t_start, config.t_end),
        warmup_samples=16,
        restart_patience=None,
    )
    budget = None
    steps = DEFAULT_STEPS if config.steps is None else config.steps
    if config.time_budget_s is not None:
        budget = started + config.time_budget_s - time.perf_counter() - _finish_reserve(config)
        budget *= 1.0 - leave_share
        steps = BUDGET_STEPS if config.steps is None else config.steps
        if budget <= 0 and steps > 0:
            return None, 0, "time_budget"
    if steps <= 0:
        return None, 0, "no_search"
    res = anneal_many(energy, key, n, data, steps=steps, time_budget_s=budget, **kwargs)
    return res, int(res.steps), "time_budget" if res.stop_reason == "time_budget" else "steps"


def _finish_reserve(config, polish: bool = True) -> float:
    """Seconds of the budget kept for re-scoring candidates and the final simulation, plus
    (``polish``) a share that the latency polish and then the hit-set descent may use until only
    the former is left (the search's last chunk often overruns its deadline a little)."""
    reserve = min(0.25, 0.025 * config.time_budget_s)
    if polish and config.polish_rounds > 0:
        reserve += min(0.5, 0.05 * config.time_budget_s)
    return reserve


def _last_stage_deadline(config, started: float) -> float | None:
    """When the polish and the descent must stop (None without a budget): only the final
    reserve (re-scoring and the last simulation) is left then."""
    if config.time_budget_s is None:
        return None
    return started + config.time_budget_s - _finish_reserve(config, polish=False)


def _metrics(first, finish, cp: Problem, output_len=None):
    out = cp.output_len if output_len is None else output_len
    return slo_metrics(first, finish, out, cp.slo_e2e_ms, cp.slo_ttft_ms, cp.slo_tpot_ms)


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
        chains=config.chains if not info["windows"] else config.window_chains,
        steps=int(info["steps"]),
        stop_reason=info["stop_reason"],
        plan_time_s=time.perf_counter() - started,
        windows=int(info["windows"]),
        scenarios=config.scenarios,
        robust_attainment=robust_att,
        polished=bool(info.get("polished", False)),
        descended=int(info.get("descended", 0)),
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


def _np_model(model: EngineModel) -> EngineModel:
    return EngineModel(*(np.asarray(x) for x in model))


__all__ = [
    "Plan",
    "PlanConfig",
    "PlanData",
    "PlanEnergy",
    "PlanSummary",
    "candidate_caps",
    "compact",
    "plan",
    "score_orders",
    "seed_orders",
    "timings",
]
