"""Per-task output-length distributions learned from earlier results (``calibrate --history``).

For a row with no ``output_tokens_hint`` the planner needs a predicted output length. From the
``output_tokens`` of finished rows of earlier results files, per task, we keep empirical
quantiles and a lognormal fit (maximum likelihood on log lengths)::

    mu = mean(log y),  sigma = std(log y)          y = output tokens (>= 1)
    median = exp(mu),  mean = exp(mu + sigma^2 / 2)

Rows that stopped at their cap (``finish_reason == "length"``) are right-censored: the fit
treats them as observed, so it is biased low when many rows hit the cap; ``capped_share`` says
how many did. The predictor lives in a profile TOML as ``[output_lengths.<task>]`` tables (or a
file of its own with just those tables)::

    predictor = load_output_length_predictor("calibrated.toml")
    predictor.predict("chat")                        # the median, tokens
    predictor.sample(np.random.default_rng(0), "chat", 8)  # scenarios for robust planning
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from batch_runner.errors import ConfigError

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


class LengthDistribution(NamedTuple):
    rows: int  # finished rows the fit saw
    mean: float  # empirical mean of output tokens
    lognormal_mu: float  # mean of log(output tokens)
    lognormal_sigma: float  # std of log(output tokens)
    quantiles: dict  # {"p10": ..., "p50": ..., ...} empirical, tokens
    capped_share: float  # share of rows that stopped at max_new_tokens (censored)


class OutputLengthPredictor(NamedTuple):
    tasks: Mapping[str, LengthDistribution]  # task -> distribution
    source: Path | None = None

    def predict(self, task: str, default: int | None = None) -> int | None:
        """The empirical median of ``task`` (tokens, >= 1), or ``default`` if unknown."""
        d = self.tasks.get(task)
        return default if d is None else max(1, round(d.quantiles["p50"]))

    def sample(self, rng: np.random.Generator, task: str, size: int) -> np.ndarray | None:
        """``size`` lengths drawn from the task's lognormal fit, (size,) int64 >= 1."""
        d = self.tasks.get(task)
        if d is None:
            return None
        draws = rng.lognormal(d.lognormal_mu, max(d.lognormal_sigma, 1e-9), size)
        return np.maximum(1, np.rint(draws)).astype(np.int64)


def fit_length_distribution(
    output_tokens: np.ndarray, capped: np.ndarray | None = None
) -> LengthDistribution:
    """The distribution of a task's output lengths (``output_tokens`` >= 1 kept)."""
    y = np.asarray(output_tokens, np.float64)
    keep = np.isfinite(y) & (y >= 1)
    y = y[keep]
    if y.size == 0:
        raise ValueError("no finished rows with output_tokens >= 1 to fit")
    logs = np.log(y)
    capped_share = 0.0 if capped is None else float(np.mean(np.asarray(capped, bool)[keep]))
    return LengthDistribution(
        rows=int(y.size),
        mean=float(y.mean()),
        lognormal_mu=float(logs.mean()),
        lognormal_sigma=float(logs.std()),
        quantiles={f"p{round(100 * q)}": float(np.quantile(y, q)) for q in QUANTILES},
        capped_share=capped_share,
    )


def predictor_tables(predictor: OutputLengthPredictor) -> dict[str, dict]:
    """``{"output_lengths": {task: {...}}}`` for a TOML file."""
    tables = {}
    for task, d in predictor.tasks.items():
        body = {k: v for k, v in d._asdict().items() if k != "quantiles"}
        body.update(d.quantiles)
        tables[task] = body
    return {"output_lengths": tables}


def load_output_length_predictor(path: str | Path) -> OutputLengthPredictor:
    """The ``[output_lengths.<task>]`` tables of a TOML file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(
            f"{path}: cannot read the output-length predictor ({e}).", path=path
        ) from e
    tables = data.get("output_lengths")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: no [output_lengths.<task>] tables.", path=path)
    tasks = {}
    for task, body in tables.items():
        try:
            quantiles = {k: float(body[k]) for k in body if k.startswith("p") and k[1:].isdigit()}
            d = LengthDistribution(
                rows=int(body["rows"]),
                mean=float(body["mean"]),
                lognormal_mu=float(body["lognormal_mu"]),
                lognormal_sigma=float(body["lognormal_sigma"]),
                quantiles=quantiles,
                capped_share=float(body.get("capped_share", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: [output_lengths.{task}] is incomplete ({e}).") from e
        if "p50" not in quantiles or not all(map(math.isfinite, (d.mean, d.lognormal_mu))):
            raise ConfigError(f"{path}: [output_lengths.{task}] needs finite mean, mu and p50.")
        tasks[task] = d
    return OutputLengthPredictor(tasks=tasks, source=path)
