"""What the planner searches (``PlanConfig``), what it returns (``Plan``, ``PlanSummary``),
and how a time budget is shared out between its stages (``_finish_reserve``,
``_last_stage_deadline``).

    cfg = PlanConfig(objective="goodput", time_budget_s=10.0)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from sajax.objectives.slo import get_objective

DEFAULT_SEEDS = ("fcfs", "sjf", "edf", "least_slack")
DEFAULT_STEPS = 2_000  # steps per chain without a time budget
DESCENT_STREAM = 0xDE5C  # fold_in constant of the hit-set descent's random stream
BUDGET_STEPS = 10_000_000  # with a budget: the schedule's length; the budget ends it first


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """What the planner searches and for how long (all plain Python values)."""

    objective: str = "goodput"  # goodput (G, the paper's) | attainment | tardiness
    tau: float = 0.0  # sigmoid width of the met-surrogate during search (0 = exact)
    chains: int | str = 8  # chains per candidate cap; "auto": sajax.plan_anneal.auto_chains
    # the annealing: "batched" (sajax.plan_search: every cap's chains in one compiled program,
    # moves scored incrementally, hit-set moves) or "classic" (sajax.anneal_many, full rescores)
    search: str = "batched"
    proposals: int = 2  # batched: proposals per chain and step (first that passes is taken)
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
    # ``descent_rounds`` rounds (0.2: the batched annealing has hit-set moves of its own; the
    # classic search used 0.5)
    descent_share: float = 0.2
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
    hit_in: float = 0.15  # batched: a predicted miss enters the hit region
    hit_swap: float = 0.15  # batched: a predicted hit trades places with a later miss

    def __post_init__(self):
        if self.chains != "auto" and not (isinstance(self.chains, int) and self.chains >= 1):
            raise ValueError(f"chains must be an int >= 1 or 'auto', got {self.chains!r}")
        if self.search not in ("batched", "classic") or self.proposals < 1:
            raise ValueError(
                f"search must be 'batched' or 'classic' (got {self.search!r}), "
                f"proposals >= 1 (got {self.proposals})"
            )
        if (self.steps or 0) < 0 or self.chunk_size < 1:
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
    chains: int  # chains in all (every finalist cap)
    steps: int  # steps per chain actually run (reproduce with PlanConfig(steps=...))
    stop_reason: str  # "steps" | "time_budget" | "no_search"
    plan_time_s: float
    windows: int  # 0 = one permutation of every request; else windows per pass
    scenarios: int
    robust_attainment: float  # mean attainment over the scenarios (NaN without robust mode)
    polished: bool = False  # the latency polish (pull_forward) beat the best order found before
    descended: int = 0  # improvements the hit-set descent made (after the polish)
    compile_s: float = 0.0  # compiling (or loading from JAX's cache) the search program
    search_s: float = 0.0  # annealing, after the compile
    orders_scored: int = 0  # orders the annealing scored exactly (chains x steps x proposals)
    anneal_gain: float = 0.0  # relative energy gain of the annealing over the best seed
    # search="classic" and windowed plans (sajax.anneal_many); the batched search leaves these
    search_restarts: int = 0  # stagnation kicks over all chains (sajax.anneal's restarts)
    search_last_improvement: int = -1  # last step at which a chain's best improved (-1: never)
    search_acceptance: float = float("nan")  # accepted / sequential steps over the search

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


# -- the time budget's stages --------------------------------------------------------------


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
