"""sajax: batched simulated annealing over permutations in JAX, and the LLM batch planner."""

from sajax import objectives
from sajax.anneal import AnnealHistory, AnnealResult, Progress, anneal, anneal_many
from sajax.incremental import IncrementalEnergy
from sajax.kernel import AnnealState, StepInfo
from sajax.moves import MoveMix, move_mix
from sajax.planner import Plan, PlanConfig, plan
from sajax.schedules import constant, geometric, linear

__all__ = [
    "AnnealHistory",
    "AnnealResult",
    "AnnealState",
    "IncrementalEnergy",
    "MoveMix",
    "Plan",
    "PlanConfig",
    "Progress",
    "StepInfo",
    "anneal",
    "anneal_many",
    "constant",
    "geometric",
    "linear",
    "move_mix",
    "objectives",
    "plan",
]
