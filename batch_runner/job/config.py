"""What a job is given (``JobConfig``: one field per CLI option), the plan it runs
(``JobPlan``) and the exceptions that set its exit code (``EngineDied`` 3, ``OutputWriteError``
2, ``JobInterrupted`` 128 + the signal).

    config = JobConfig(input="requests.parquet", out="results.parquet", engine="sim")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np

from batch_runner.errors import OutputError
from batch_runner.executor import DEFAULT_MAX_RETRIES, DEFAULT_STALL_TIMEOUT_S


@dataclass
class JobConfig:
    """The options of ``sajax-batch`` (one field per CLI option), plus runner tuning."""

    input: Path
    out: Path
    engine: str = "auto"  # auto | llamacpp | turbomind | sim
    policy: str = "sajax"  # sajax | fcfs | sjf | edf | slack
    objective: str = "g"  # g | attainment | tardiness
    time_budget: float = 10.0  # seconds the planner may spend
    chains: int | str = "auto"  # annealing chains per candidate cap, or "auto"
    seed: int = 0
    slo_config: Path | None = None
    slo_scale: str | None = None  # which scale table of the SLO preset file
    profile: str | None = None
    length_predictor: Path | None = None  # TOML with [output_lengths.<task>]; None: --profile's
    model: Path | None = None
    slots: int | None = None
    resume: bool = False
    on_bad_rows: str = "error"
    summary_json: Path | None = None
    report: Path | None = None
    quiet: bool = False
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S  # s without engine events: dead; 0 = never
    calibrate: str = "auto"  # auto | always | never: probe the engine before planning
    replan: str = "auto"  # auto (the closed loop for --policy sajax) | off
    replan_every: int = 0  # also re-plan every this many finishes (0: only on drift)
    replan_budget: float = 2.0  # planner seconds of a re-plan
    replicas: int = 0  # > 0: that many engine replicas as Ray actors (batch_runner.replica_job)
    ray_address: str | None = None  # the Ray cluster; None: a local Ray for the job
    replica_profiles: str | None = None  # comma-separated, one per replica; None: --profile
    # Not CLI options: how often finished rows are checkpointed, and retries per request.
    checkpoint_rows: int = 50
    checkpoint_seconds: float = 10.0
    checkpoint_min_seconds: float = 1.0  # row-triggered parts at most this often
    max_retries: int = DEFAULT_MAX_RETRIES


class JobPlan(NamedTuple):
    order: np.ndarray  # (n,) int64, row indices of the planned table in submission order
    inflight_cap: int  # requests submitted and not finished, at most
    predicted_e2e_ms: np.ndarray  # (n,) float64 per row of the planned table; NaN = unknown
    info: dict = {}  # what the planner reports (JSON-ready), copied to the summary's "plan"


class EngineDied(click.ClickException):
    exit_code = 3


class OutputWriteError(OutputError):
    pass


class JobInterrupted(click.ClickException):
    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM
