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

Modules, by stage: ``config`` (PlanConfig, Plan, PlanSummary, the budget's stages), ``energy``
(PlanEnergy, score_orders, predict), ``prepare`` (compact, candidate caps, the search's data),
``seeds`` (step 1), ``search`` (step 2: sim settings, the annealing), ``refine`` (polish and
descent), ``driver`` (``plan`` itself). Windows: ``sajax.decompose``.
"""

from sajax.planner.config import (
    BUDGET_STEPS,
    DEFAULT_SEEDS,
    DEFAULT_STEPS,
    DESCENT_STREAM,
    Plan,
    PlanConfig,
    PlanSummary,
)
from sajax.planner.driver import plan
from sajax.planner.energy import (
    SCORE_BATCH,
    PlanData,
    PlanEnergy,
    cap_met_fn,
    predict,
    predicted_met,
    score_orders,
    timings,
    with_cap,
)
from sajax.planner.prepare import (
    alone_time_ms,
    candidate_caps,
    compact,
    make_data,
    objective_scale,
    with_models,
)
from sajax.planner.refine import descend, polish
from sajax.planner.search import run_search, search_energy, sim_settings
from sajax.planner.seeds import blend_orders, build_seeds, chain_starts, seed_orders

__all__ = [
    "BUDGET_STEPS",
    "DEFAULT_SEEDS",
    "DEFAULT_STEPS",
    "DESCENT_STREAM",
    "Plan",
    "PlanConfig",
    "PlanData",
    "PlanEnergy",
    "PlanSummary",
    "SCORE_BATCH",
    "alone_time_ms",
    "blend_orders",
    "build_seeds",
    "candidate_caps",
    "cap_met_fn",
    "chain_starts",
    "compact",
    "descend",
    "make_data",
    "objective_scale",
    "plan",
    "polish",
    "predict",
    "predicted_met",
    "run_search",
    "score_orders",
    "search_energy",
    "seed_orders",
    "sim_settings",
    "timings",
    "with_cap",
    "with_models",
]
