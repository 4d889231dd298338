"""The choices and option groups shared by several ``sajax`` commands (``batch_runner.cli``):
SLO presets, bad rows, the planner's options and the engine.

    @click.command()
    @_planner_options
    def plan(**options): ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

ENGINES = ("auto", "llamacpp", "turbomind", "sim")
POLICIES = ("sajax", "fcfs", "sjf", "edf", "slack")
OBJECTIVES = ("g", "attainment", "tardiness")
SLO_SCALES = ("cpu", "gpu")
ON_BAD_ROWS = ("error", "skip")
DEFAULT_TIME_BUDGET_S = 10.0

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_file = click.Path(path_type=Path, dir_okay=False)


# --- option groups shared by several commands -----------------------------------------------


class ChainsType(click.ParamType):
    """``--chains``: ``auto`` or an int >= 1."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or str(value).lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"{value!r} is neither 'auto' nor an integer >= 1", param, ctx)
        return n


def _slo_options(f: Callable) -> Callable:
    f = click.option(
        "--slo-scale",
        type=click.Choice(SLO_SCALES),
        default=None,
        help="Which scale of the preset file to use [default: gpu for --engine turbomind, "
        "else the file's default_scale].",
    )(f)
    f = click.option(
        "--slo-config",
        type=_file,
        default=None,
        help="TOML file of per-task SLO presets (e.g. datasets/slo_presets.toml); they fill "
        "the SLOs and max_new_tokens a row leaves empty.",
    )(f)
    return f


def _on_bad_rows_option(f: Callable) -> Callable:
    return click.option(
        "--on-bad-rows",
        type=click.Choice(ON_BAD_ROWS),
        default="error",
        show_default=True,
        help="error: refuse a file with bad rows (exit 2, naming rows and columns). skip: write "
        "bad rows with a reject_reason column to the rejects file next to --out (results.parquet: "
        "results.rejects.parquet) and go on.",
    )(f)


def _planner_options(f: Callable) -> Callable:
    for option in reversed(
        [
            click.option(
                "--policy",
                type=click.Choice(POLICIES),
                default="sajax",
                show_default=True,
                help="Order of the requests: sajax (simulated annealing), fcfs (file order), "
                "sjf (shortest predicted first), edf (earliest deadline), slack (least slack).",
            ),
            click.option(
                "--objective",
                type=click.Choice(OBJECTIVES),
                default="g",
                show_default=True,
                help="What sajax maximises: g (SLO hits per second of summed latency, the "
                "paper's G), attainment (share of SLOs met), tardiness (minus weighted lateness).",
            ),
            click.option(
                "--time-budget",
                type=click.FloatRange(min=0.0, min_open=True),
                default=DEFAULT_TIME_BUDGET_S,
                show_default=True,
                help="Seconds the planner may search.",
            ),
            click.option(
                "--chains",
                type=ChainsType(),
                default="auto",
                show_default=True,
                help="Annealing chains per candidate in-flight cap (the planner anneals two "
                "caps), or auto: chosen from the device and the number of requests (64-256 in "
                "all on a CPU, thousands on a GPU).",
            ),
            click.option(
                "--seed", type=int, default=0, show_default=True, help="Random seed of the plan."
            ),
            click.option(
                "--profile",
                default=None,
                help="Engine profile (name of a shipped profile or path to a TOML file) the "
                "planner predicts with [default: the engine's own].",
            ),
            click.option(
                "--slots",
                type=click.IntRange(min=1),
                default=None,
                help="Requests in flight at most [default: the profile's; sajax may use fewer].",
            ),
        ]
    ):
        f = option(f)
    return f


def _engine_option(help_text: str, choices: tuple[str, ...] = ENGINES) -> Callable:
    return click.option(
        "--engine",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help=help_text,
    )
