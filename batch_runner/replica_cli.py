"""The ``sajax-batch`` options of a multi-replica job (``--replicas``; Ray is imported only
when a job uses them, by ``batch_runner.replica_job``)."""

from __future__ import annotations

from collections.abc import Callable

import click


def replica_options(f: Callable) -> Callable:
    """``--replicas``, ``--ray-address``, ``--replica-profiles`` (see batch_runner.replica_job)."""
    for option in reversed(
        (
            click.option(
                "--replicas",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="Run on N engine replicas, each a Ray actor; the plan assigns every request "
                "to a replica and orders each one; a replica that dies has its unfinished "
                "requests re-planned on the others. 0 = one engine in this process (no Ray). "
                "Needs the Ray extra: pip install -e '.[ray]'.",
            ),
            click.option(
                "--ray-address",
                default=None,
                help="Ray cluster to run the replicas on (ray.init's address, e.g. auto or "
                "HOST:PORT) [default: a local Ray, started for the job and stopped after it].",
            ),
            click.option(
                "--replica-profiles",
                default=None,
                help="One engine profile per replica, comma-separated (replicas of different "
                "speeds; a sim replica runs with its own) [default: --profile for every one].",
            ),
        )
    ):
        f = option(f)
    return f
