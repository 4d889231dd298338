"""Engine replicas as Ray actors, and the driver that runs a multi-replica plan on them.

Each replica is a Ray actor holding a ``batch_runner.replica_worker.ReplicaWorker`` (one engine
and its executor thread). The driver (``run_on_replicas``) sends every replica its requests in
plan order, then collects finished measurements in batches: it keeps one ``poll`` call in flight
per live replica and waits on them together (``ray.wait``).

Faults. A replica is dead when its actor dies (``RayActorError``: the process was killed or
crashed), when its engine fails (``status["error"]``: ``EngineError``, a stall), or when a
``poll`` does not come back within ``hang_s``. The driver kills its actor, takes from every
survivor the requests it has not submitted yet (``take_pending``), and asks ``replan`` to
spread them, with the dead replica's unfinished requests, over the survivors (appended after
what they already run). A measurement is accepted once per id, only from a replica that is
alive and holds the id, so nothing is lost or doubled; each is passed to ``on_result`` with the
replica that served it. With no survivor left the driver raises ``EngineError`` (the job saves
what finished; ``--resume`` continues).

Ray is imported here only, and only when a multi-replica job runs (``require_ray``); the
single-engine path never imports this module.

    with ray_session(address=None, num_cpus=2) as ray:
        pool = ReplicaPool(ray, [{"engine": "sim", "profile": "default"}] * 4)
        run = run_on_replicas(pool, requests, orders, ranks, caps, replan=..., on_result=...)
        pool.shutdown()
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from batch_runner.engines.base import EngineError, EngineRequest
from batch_runner.errors import ConfigError
from batch_runner.executor import Measurement

log = logging.getLogger(__name__)

RAY_HINT = "install the Ray extra: pip install -e '.[ray]' (or pip install ray)"


def require_ray():
    """The ``ray`` module, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--replicas needs Ray, which is not installed: {RAY_HINT}") from exc
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray connected for the block: to ``address`` (an existing cluster; left running), or, when
    Ray is not running in this process yet, a local one started here and shut down after."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
        except Exception as exc:  # a bad address, a cluster that is not up
            where = f"the Ray cluster at {address!r}" if address else "a local Ray"
            raise ConfigError(f"--ray-address: could not connect to {where}: {exc}") from exc
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


class ReplicaPool:
    """``len(options)`` actors, replica j built from ``options[j]`` (``make_replica_engine``)."""

    def __init__(self, ray, options: list[dict[str, Any]], *, num_cpus: float = 0):
        from batch_runner.replica_worker import ReplicaWorker

        if not options:
            raise ConfigError("--replicas must be >= 1")
        self.ray = ray
        actor = ray.remote(num_cpus=num_cpus, max_restarts=0)(ReplicaWorker)
        # a GPU engine's replica holds one GPU (Ray places it on a node that has one free)
        self.actors = [
            actor.options(num_gpus=opt.get("num_gpus", 0)).remote(opt, j)
            for j, opt in enumerate(options)
        ]
        try:
            self.info = ray.get([a.start.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            self.shutdown()
            raise EngineError(f"an engine replica failed to start: {_cause(exc)}") from exc

    def __len__(self) -> int:
        return len(self.actors)

    def count_tokens(self, requests: list[EngineRequest]) -> list[int]:
        """Prompt tokens by replica 0's engine (every replica runs the same kind of engine)."""
        return self.ray.get(self.actors[0].count_tokens.remote(requests))

    def kill(self, j: int) -> None:
        with contextlib.suppress(Exception):
            self.ray.kill(self.actors[j], no_restart=True)

    def shutdown(self) -> None:
        """Stop every engine (a dead actor is skipped), then end the actors."""
        refs = []
        for a in self.actors:
            with contextlib.suppress(Exception):
                refs.append(a.stop.remote())
        with contextlib.suppress(Exception):
            self.ray.wait(refs, num_returns=len(refs), timeout=30)
        for j in range(len(self.actors)):
            self.kill(j)


@dataclass
class ReplicaRun:
    served: dict[str, int]  # id -> replica whose measurement was accepted
    dead: list[int]  # replicas that died, in order
    replans: int  # re-plans after deaths
    stopped: bool  # should_stop() ended the run
    unfinished: list[str]  # ids without a measurement (only when stopped)
    t0: list[float]  # each replica's engine clock at its start (s)
    errors: dict[int, str] = field(default_factory=dict)  # why each dead replica died


def run_on_replicas(
    pool: ReplicaPool,
    requests: dict[str, EngineRequest],
    orders: list[list[str]],
    ranks: dict[str, int],
    caps: list[int],
    *,
    replan: Callable[[list[str], list[int]], dict[int, list[str]]],
    on_result: Callable[[Measurement, int], None],
    should_stop: Callable[[], bool] | None = None,
    max_retries: int = 2,
    stall_timeout_s: float | None = None,
    poll_timeout: float = 0.2,
    hang_s: float | None = None,
) -> ReplicaRun:
    """Run ``orders[j]`` (ids in submission order) on replica j (module doc).

    ``replan(ids, survivors) -> {survivor: ids in order}`` must place every id it is given
    exactly once. Raises ``EngineError`` when every replica has died.
    """
    ray = pool.ray
    r = len(pool)
    live = set(range(r))
    assigned: list[set[str]] = [set(o) for o in orders]
    served: dict[str, int] = {}
    run = ReplicaRun(served, [], 0, False, [], [])
    hang_s = hang_s or max(120.0, 2 * (stall_timeout_s or 0)) + poll_timeout

    def items(ids):
        return [(requests[i], ranks[i]) for i in ids]

    run.t0 = ray.get(
        [pool.actors[j].run.remote(caps[j], max_retries, stall_timeout_s) for j in range(r)]
    )
    for j in range(r):
        pool.actors[j].extend.remote(items(orders[j]))
    polls: dict[Any, tuple[int, float]] = {}

    def issue(j: int) -> None:
        polls[pool.actors[j].poll.remote(poll_timeout)] = (j, time.monotonic())

    def die(j: int, why: str) -> None:
        live.discard(j)
        run.dead.append(j)
        run.errors[j] = why
        pool.kill(j)
        for ref, (k, _) in list(polls.items()):
            if k == j:
                del polls[ref]
        lost = sorted(assigned[j], key=lambda i: ranks[i])
        assigned[j] = set()
        log.warning("replica %d died (%s); re-planning %d request(s)", j, why, len(lost))
        if not live:
            raise EngineError(f"every engine replica died; the last: replica {j}: {why}")
        taken: list[str] = []
        for k in sorted(live):
            try:
                ids = ray.get(pool.actors[k].take_pending.remote(), timeout=hang_s)
            except Exception as exc:  # a survivor that died meanwhile: found by its poll
                log.warning("replica %d: take_pending failed: %s", k, _cause(exc))
                continue
            assigned[k] -= set(ids)
            taken += ids
        todo = [i for i in lost + taken if i not in served]
        if not todo:
            return
        placed = replan(todo, sorted(live))
        flat = [i for ids in placed.values() for i in ids]
        if sorted(flat) != sorted(todo) or not set(placed) <= live:
            raise RuntimeError("replan must place every request once, on a survivor")
        run.replans += 1
        for k, ids in placed.items():
            assigned[k] |= set(ids)
            pool.actors[k].extend.remote(items(ids))
            if not any(v[0] == k for v in polls.values()):
                issue(k)

    for j in range(r):
        if assigned[j]:
            issue(j)
    while any(assigned[j] for j in live):
        if should_stop is not None and should_stop():
            run.stopped = True
            break
        ready, _ = ray.wait(list(polls), num_returns=1, timeout=poll_timeout)
        for ref in ready:
            entry = polls.pop(ref, None)
            if entry is None or entry[0] not in live:
                continue
            j = entry[0]
            try:
                measurements, status = ray.get(ref)
            except ray.exceptions.RayError as exc:
                die(j, _cause(exc))
                continue
            for m in measurements:
                if m.id in served or m.id not in assigned[j]:
                    log.warning("replica %d: ignoring a second result for %r", j, m.id)
                    continue
                served[m.id] = j
                assigned[j].discard(m.id)
                on_result(m, j)
            if status.get("error"):
                die(j, status["error"])
            elif assigned[j]:
                issue(j)
        now = time.monotonic()
        for ref, (j, at) in list(polls.items()):
            if now - at > hang_s and j in live:
                polls.pop(ref, None)
                die(j, f"no answer from the replica's actor for {hang_s:g} s")
    run.unfinished = sorted({i for j in live for i in assigned[j]}, key=lambda i: ranks[i])
    return run


def _cause(exc: BaseException) -> str:
    """A Ray error's own message, first line (Ray wraps the actor's traceback around it)."""
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
