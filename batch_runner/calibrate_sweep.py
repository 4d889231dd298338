"""The calibration sweep: short batches on a real engine (batch sizes x prompt lengths x output
lengths, ``ignore_eos``) whose iterations (or request times) the engine model is fitted to.

    records = run_sweep(engine, sweep_points(*DEFAULT_SWEEP))
    fit = fit_from_iteration_log(records)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from batch_runner.calibrate_fit import IterationFit, _fit, schedule_basis
from batch_runner.errors import ConfigError


class SweepPoint(NamedTuple):
    batch: int  # requests submitted together
    prompt_tokens: int  # target prompt length (before the chat template)
    output_tokens: int  # max_new_tokens (ignore_eos)
    long_first: int = 0  # > 0: the first request's prompt has this many tokens (a mixed batch)


DEFAULT_SWEEP = (
    (1, 2, 4),  # batch sizes
    (16, 128, 384),  # prompt tokens
    (8, 48),  # output tokens
)
QUICK_SWEEP = ((1, 4), (16, 160), (6,))


def sweep_points(
    batches: Iterable[int], prompts: Iterable[int], outputs: Iterable[int]
) -> list[SweepPoint]:
    return [SweepPoint(*p) for p in itertools.product(batches, prompts, outputs)]


def run_sweep(
    engine, points: Sequence[SweepPoint], *, seed: int = 0, progress=None, by_point: bool = False
) -> list:
    """Run each point (``batch`` requests at once, ``ignore_eos``) and return every iteration
    record the engine logged (``by_point``: one list per point). ``engine`` is started here and
    stopped at the end."""
    rng = np.random.default_rng(seed)
    records = []
    engine.start()
    try:
        # The first decodes of a new context allocate its compute graphs and page the weights
        # in (seconds, not milliseconds): run them off the record.
        warmup = [SweepPoint(1, 64, 4), SweepPoint(min(2, engine.slots), 16, 4)]
        _run_point(engine, warmup[0], "warmup-0", rng)
        _run_point(engine, warmup[1], "warmup-1", rng)
        for k, point in enumerate(points):
            engine.iteration_log.clear()
            _run_point(engine, point, f"sweep-{k}", rng)
            log = list(engine.iteration_log)
            if by_point:
                records.append(log)
            else:
                records.extend(log)
            if progress is not None:
                progress(k + 1, len(points), point)
    finally:
        engine.stop()
    return records


def fit_sweep_request_times(
    engine, points: Sequence[SweepPoint], *, slots: int, token_budget: int, seed: int = 0
) -> IterationFit:
    """Run each point as its own offline batch on any ``Engine`` and fit (a, b, c) to the
    requests' first-token and finish times (``fit_from_request_times``'s method): for engines
    without an iteration log, e.g. ``sim``, where it must give back the engine's profile."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, point in enumerate(points):
        engine.start()
        try:
            t0 = engine.now()
            times = _run_point(engine, point, f"sweep-{k}", rng)
        finally:
            engine.stop()
        ids = [f"sweep-{k}-{j}" for j in range(point.batch)]
        first = np.array([1000 * (times[i][0] - t0) for i in ids])
        finish = np.array([1000 * (times[i][1] - t0) for i in ids])
        inp = np.array([times[i][2] for i in ids])
        out = np.array([times[i][3] for i in ids])
        order = np.arange(point.batch)
        bf, bl = schedule_basis(order, inp, out, slots=slots, token_budget=token_budget)
        xs += [bf, bl]
        ys += [first, finish]
    return _fit(np.concatenate(xs), np.concatenate(ys), relative=True)


def _run_point(engine, point: SweepPoint, prefix: str, rng) -> dict:
    """Submit ``point.batch`` requests at once and wait until all have finished; returns
    {id: (first-token time, finish time, input tokens, output tokens)} on the engine clock."""
    from batch_runner.engines.base import EngineRequest, Failed, Finished, FirstToken
    from batch_runner.workloads.generate import filler_text

    ids = set()
    for j in range(point.batch):
        rid = f"{prefix}-{j}"
        ids.add(rid)
        tokens = point.long_first if j == 0 and point.long_first > 0 else point.prompt_tokens
        engine.submit(
            EngineRequest(
                id=rid,
                prompt=filler_text(tokens, rng),
                max_new_tokens=point.output_tokens,
                ignore_eos=True,
                input_tokens_hint=tokens,  # only the simulator reads it
            )
        )
    deadline = time.monotonic() + 600
    first, times = {}, {}
    while ids:
        for event in engine.poll(timeout=0.5):
            if isinstance(event, Failed):
                raise ConfigError(f"calibration request {event.id} failed: {event.error}")
            if isinstance(event, FirstToken):
                first[event.id] = event.t
            if isinstance(event, Finished):
                ids.discard(event.id)
                start = first.get(event.id, event.t)
                times[event.id] = (start, event.t, event.input_tokens, event.output_tokens)
        if time.monotonic() > deadline:
            raise ConfigError(f"calibration point {point} did not finish in 600 s")
    return times
