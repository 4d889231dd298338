"""Online refits while a job runs: the engine's speed, and the output length of each task.

Engine speed. The plan's engine model (from a profile or the probe, ``batch_runner.probe``)
gives the shape of the iteration time, ``t = a + b * forward + c * context``; what drifts on a
shared machine (another process takes cores, a GPU clocks down) is mostly its scale. The online
fit estimates one factor ``s`` over a recent window and the job re-plans with ``s * (a, b, c)``:

- per iteration, where the engine keeps an ``iteration_log`` (llamacpp; sim with
  ``log_iterations``): ``s = sum(measured seconds) / sum(model seconds)`` over the last
  ``window_iterations`` iterations, each predicted from its own token counts;
- per request otherwise: a shadow run of the reference simulator over the requests in the order
  they were submitted (measured lengths for the finished ones, the cap for those still running,
  which then cannot finish early) gives P, each finish's time at the model's speed; an offline
  engine's schedule does not depend on its speed, so M (measured) is linear in P while the
  speed holds. ``s`` is the slope dM/dP of the last segment of the last ``window_requests``
  finishes, split in two lines where that fits best (a change of speed inside the window).

Output lengths. Per task: the measured ``output_tokens`` of finished rows without
``ignore_eos``, and, for rows that had an ``output_tokens_hint``, the ratio measured / hint.
A pending row's length: ``max_new_tokens`` under ignore_eos; ``hint * median ratio`` for a
hinted row; the task's measured median for the others; each once ``min_rows`` rows of the task
have finished (else the planned length), capped at ``max_new_tokens``.

    speed = OnlineSpeed(model, engine)
    speed.observe_finish(rid, input_tokens, output_tokens, finish_ms)   # per request
    speed.scale()          # 1.0 until there is evidence; 2.0 = twice as slow as the model
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import numpy as np

from sajax.engine_model import EngineModel
from sajax.refsim import ContinuousBatchSim

DEFAULT_WINDOW_ITERATIONS = 64
DEFAULT_WINDOW_REQUESTS = 16


def scaled_model(model: EngineModel, scale: float) -> EngineModel:
    """``model`` with its costs (a, b, c, d) multiplied by ``scale``."""
    return model._replace(
        a_ms=np.float32(float(model.a_ms) * scale),
        b_ms=np.float32(float(model.b_ms) * scale),
        c_ms=np.float32(float(model.c_ms) * scale),
        d_ms=np.float32(float(model.d_ms) * scale),
    )


class OnlineSpeed:
    """The engine's speed relative to ``model`` (module doc), from a recent window."""

    def __init__(
        self,
        model: EngineModel,
        engine: Any = None,
        *,
        window_iterations: int = DEFAULT_WINDOW_ITERATIONS,
        window_requests: int = DEFAULT_WINDOW_REQUESTS,
    ):
        self.model = model
        self.window_iterations = int(window_iterations)
        self.window_requests = int(window_requests)
        self._log = getattr(engine, "iteration_log", None)
        self._log_start = len(self._log) if self._log is not None else 0  # probe's are older
        self._submitted: list[str] = []  # ids in submission order
        self._lengths: dict[str, tuple[int, int]] = {}  # id -> (input, output) when finished
        self._finish_ms: dict[str, float] = {}
        self._order_finished: list[str] = []
        self._cap_tokens: dict[str, tuple[int, int]] = {}  # id -> (input estimate, cap)
        self.source = "iterations" if self._log is not None else "requests"

    # -- observations --------------------------------------------------------------------------
    def observe_submit(self, rid: str, input_tokens: int, max_new_tokens: int) -> None:
        if rid not in self._cap_tokens:
            # what was finished when it went in: the shadow submits it after as many finishes
            self._submitted.append((rid, len(self._order_finished)))
        self._cap_tokens[rid] = (max(1, int(input_tokens)), max(1, int(max_new_tokens)))

    def observe_finish(self, rid: str, input_tokens, output_tokens, finish_ms: float) -> None:
        if rid not in self._cap_tokens:
            return
        est_in, _ = self._cap_tokens[rid]
        n_in = int(input_tokens) if input_tokens else est_in
        n_out = int(output_tokens) if output_tokens else 1
        self._lengths[rid] = (max(1, n_in), max(1, n_out))
        self._finish_ms[rid] = float(finish_ms)
        self._order_finished.append(rid)

    # -- the estimate --------------------------------------------------------------------------
    def scale(self, window_requests: int | None = None) -> float:
        """Measured / modelled time over the recent window (``window_requests`` finishes for
        the per-request estimate, default the constructor's); 1.0 without enough evidence."""
        s = self._scale_from_iterations() if self._log is not None else None
        if s is None:
            s = self._scale_from_requests(window_requests or self.window_requests)
        return 1.0 if s is None or not np.isfinite(s) or s <= 0 else float(s)

    def current_model(self) -> EngineModel:
        return scaled_model(self.model, self.scale())

    def _scale_from_iterations(self) -> float | None:
        log = self._log
        if len(log) < self._log_start:  # the engine trimmed its log
            self._log_start = 0
        recent = [
            r
            for r in log[max(self._log_start, len(log) - self.window_iterations) :]
            if r.decode_tokens + r.prefill_tokens > 0
        ]
        if len(recent) < 8:
            return None
        m = self.model
        modelled = sum(
            float(m.a_ms)
            + float(m.b_ms) * (r.decode_tokens + r.prefill_tokens)
            + float(m.c_ms) * r.context_tokens
            + float(m.d_ms) * r.sampled_rows
            for r in recent
        )
        measured = 1000.0 * sum(r.seconds for r in recent)
        return measured / modelled if modelled > 0 else None

    def _scale_from_requests(self, k: int) -> float | None:
        if len(self._order_finished) < max(4, k // 2):
            return None
        # the executor's admissions, replayed: each request goes in after as many finishes as
        # it did (exact for submissions on a finish; one a re-plan's larger cap let in between
        # finishes goes in a few iterations early)
        shadow = ContinuousBatchSim(self.model)
        queue = deque(self._submitted)
        done = 0

        def feed() -> None:
            while queue and queue[0][1] <= done:
                rid, _ = queue.popleft()
                n_in, n_out = self._lengths.get(rid) or self._cap_tokens[rid]
                shadow.submit(rid, n_in, n_out)

        feed()
        predicted: dict[str, float] = {}
        while len(predicted) < len(self._order_finished):
            it = shadow.advance()
            if it.idle:
                break
            for rid in it.finished:
                if rid in self._finish_ms:
                    predicted[rid] = it.t_end_ms
            done += len(it.finished)
            feed()
        window = [r for r in self._order_finished if r in predicted][-k:]
        if len(window) < 4:
            return None
        m = np.array([self._finish_ms[r] for r in window])
        p = np.array([predicted[r] for r in window])
        return _last_segment_slope(p[np.argsort(m)], np.sort(m))


def _last_segment_slope(p: np.ndarray, m: np.ndarray, min_points: int = 3) -> float | None:
    """The slope dM/dP of the last linear segment: the split of the window into two lines
    (or none) with the least squared error, so that a change of speed inside the window gives
    the speed after it."""

    def sse(x, y):
        if len(x) < 2 or np.ptp(x) <= 0:
            return 0.0, None
        coef = np.polyfit(x, y, 1)
        return float(np.sum((np.polyval(coef, x) - y) ** 2)), float(coef[0])

    best, slope = np.inf, None
    for split in range(0, len(p) - min_points + 1):
        if 0 < split < 2:
            continue  # a first segment of one point says nothing
        head, _ = sse(p[:split], m[:split]) if split else (0.0, None)
        tail, s = sse(p[split:], m[split:])
        penalty = 1e-9 * (split > 0)  # no split unless it explains more
        if s is not None and head + tail + penalty < best * (1 - 1e-6):
            best, slope = head + tail + penalty, s
    return slope


class OnlineLengths:
    """Per-task output lengths learned from the rows that finish (module doc)."""

    def __init__(self, tasks, hints, caps, ignore_eos, planned, *, min_rows: int = 5):
        self.tasks = np.asarray(tasks, dtype=object)
        self.hints = np.asarray(hints, np.int64)  # -1: no hint
        self.caps = np.maximum(np.asarray(caps, np.int64), 1)
        self.ignore = np.asarray(ignore_eos, bool)
        self.planned = np.asarray(planned, np.int64)
        self.min_rows = int(min_rows)
        self._measured: dict[str, list[int]] = defaultdict(list)
        self._ratio: dict[str, list[float]] = defaultdict(list)

    def observe(self, row: int, output_tokens: int | None) -> None:
        if output_tokens is None or self.ignore[row] or output_tokens < 1:
            return
        task = self.tasks[row]
        self._measured[task].append(int(output_tokens))
        if self.hints[row] > 0:
            self._ratio[task].append(output_tokens / float(self.hints[row]))

    def predict(self, rows) -> np.ndarray:
        """(len(rows),) predicted output tokens of ``rows``, >= 1."""
        rows = np.asarray(rows, np.int64)
        out = self.planned[rows].copy()
        for k, r in enumerate(rows):
            if self.ignore[r]:
                out[k] = self.caps[r]
                continue
            task = self.tasks[r]
            if self.hints[r] > 0 and len(self._ratio[task]) >= self.min_rows:
                out[k] = round(self.hints[r] * float(np.median(self._ratio[task])))
            elif self.hints[r] <= 0 and len(self._measured[task]) >= self.min_rows:
                out[k] = round(float(np.median(self._measured[task])))
        return np.clip(out, 1, self.caps[rows])

    def summary(self) -> dict[str, dict[str, float]]:
        """{task: {rows, median, hint_ratio}} of what was learned (JSON-ready)."""
        out = {}
        for task, values in self._measured.items():
            ratios = self._ratio.get(task) or []
            out[str(task)] = {
                "rows": len(values),
                "median": float(np.median(values)),
                "hint_ratio": float(np.median(ratios)) if ratios else None,
            }
        return out
