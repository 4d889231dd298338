"""Stopping and resuming a job: SIGINT / SIGTERM stop it at the next row
(``_stop_on_signals``) and the message gives the command that continues it
(``resume_command``: the user's own command line plus ``--resume``).

    with _stop_on_signals() as sig:
        ...  # bool(sig): a signal arrived; sig["signum"] says which
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from batch_runner.job.config import JobConfig


def engine_died(what: str, exc: Exception, config, ckpt, total: int):
    """The EngineDied of a job whose ``what`` ("the sim engine", "the sim replicas") died:
    finished rows flushed, how many are saved, and the resume command."""
    from batch_runner.job.config import EngineDied

    ckpt.flush()
    saved = ckpt.load().num_rows
    return EngineDied(
        f"{what} died: {exc}. {saved} of {total} rows are done "
        f"and saved in {ckpt.directory}.\nResume with:\n  {resume_command(config)}"
    )


def resume_command(config: JobConfig) -> str:
    """The command that continues this job: the user's own command line plus ``--resume``."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "sajax" and argv[1:2] == ["run"]:
        argv = ["sajax-batch", *argv[2:]]
    if argv and Path(argv[0]).name == "sajax-batch":
        args = argv[1:]
        if "--resume" not in args:
            args.append("--resume")
        return shlex.join(["sajax-batch", *args])
    args = ["sajax-batch", str(config.input)]
    for f in fields(JobConfig):
        if f.name == "input" or f.name.startswith("checkpoint_") or f.name == "max_retries":
            continue
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            if value or f.name == "resume":
                args.append(flag)
        elif value is not None:
            args += [flag, str(value)]
    return shlex.join(args)


@contextmanager
def _stop_on_signals() -> Iterator[dict[str, int]]:
    """SIGINT/SIGTERM set ``state['signum']`` (a second one stops at once)."""
    state: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if "signum" in state:
            raise KeyboardInterrupt
        state["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
