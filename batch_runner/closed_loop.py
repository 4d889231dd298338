"""The closed loop: watch a running job, refit its models, re-plan what is not yet admitted.

The executor (``batch_runner.executor.execute(..., controller=loop)``) tells the loop about
every submit, first token and finish, and asks it between polls whether the pending requests
have a new order (``revise``). The loop keeps

- the current plan's predicted finish time of every row (job clock, ms from t0);
- ``OnlineSpeed`` (the engine's speed relative to the plan's model) and ``OnlineLengths``
  (per-task output lengths), both fed by what the engine reports (``batch_runner.online_fit``);
- the progress of the finishes since the last plan, measured (M) against predicted (P)::

      rate error   = dM/dP - 1    (least-squares slope over the last drift_window finishes)
      offset error = (M_last - P_last) / max(P_last - t_plan, 1 ms)

A re-plan is due when the rate error is beyond ``rate_threshold`` or the offset error beyond
``drift_threshold`` (reason ``drift``; the rate error sees a change of speed within a few
finishes, the offset error a slow creep), or every ``every`` finishes (reason ``every N``;
0 = never); at most one every ``min_interval_s`` of job time (a re-plan takes CPU from the
engine on a small machine). It runs ``batch_runner.replan.replan`` on a snapshot of the state
with the refitted model and lengths; the requests in flight keep running. With a wall-clock
engine the re-plan runs in a background thread (niced) and the executor keeps submitting in
the current order meanwhile; its order is applied to the requests still pending when it is
done. With the simulator's virtual clock it runs inline (it takes no simulated time either
way). Every re-plan is recorded (``records``): job time, reason, predicted attainment before
and after, the speed factor, whether the order changed.

    loop = ClosedLoop(problem, ids, cap, predicted_finish_ms, model, engine)
    execute(engine, requests, cap, controller=loop)
    loop.summary()     # {"replans": [...], "curves": [...], ...}
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from batch_runner.online_fit import OnlineLengths, OnlineSpeed, scaled_model
from batch_runner.replan import JobState, replan
from sajax.engine_model import EngineModel
from sajax.metrics import slo_metrics
from sajax.problem import Problem

log = logging.getLogger(__name__)
CURVE_POINTS = 60  # points kept per predicted-attainment curve


@dataclass(frozen=True)
class LoopConfig:
    drift_threshold: float = 0.15  # |progress offset error| that triggers a re-plan
    rate_threshold: float = 0.3  # |progress rate error| that triggers a re-plan
    drift_window: int = 8  # finishes since the last plan the median is taken over
    every: int = 0  # also re-plan every this many finishes (0 = only on drift)
    budget_s: float = 2.0  # planner time budget of a re-plan
    background: bool | None = None  # None: a thread unless the engine's clock is virtual
    max_replans: int = 50
    min_interval_s: float = 10.0  # job seconds from one re-plan to the next, at least

    def __post_init__(self):
        if not (self.drift_threshold > 0 and self.rate_threshold > 0):
            raise ValueError("the drift thresholds must be > 0")
        if self.drift_window < 3 or self.every < 0:
            raise ValueError("need drift_window >= 3 and every >= 0")
        if not self.budget_s > 0:
            raise ValueError(f"the re-plan budget must be > 0 s, got {self.budget_s}")


class ClosedLoop:
    """The executor's controller (module doc); ``rows`` index ``problem`` and ``ids``."""

    def __init__(
        self,
        problem: Problem,
        ids: list[str],
        cap: int,
        predicted_finish_ms,
        model: EngineModel,
        engine: Any = None,
        *,
        lengths: OnlineLengths | None = None,
        config: LoopConfig | None = None,
        objective: str = "goodput",
        seed: int = 0,
        planner=None,
        on_start=None,
        predicted_first_ms=None,
    ):
        self.config = config or LoopConfig()
        self.on_start = on_start  # on_start(reason, pending, t_s) when a re-plan begins
        self.problem = problem
        self.row_of = {rid: i for i, rid in enumerate(ids)}
        self.ids = list(ids)
        self.cap = int(cap)
        self.model = model
        self.objective = objective
        self.seed = int(seed)
        self.planner = planner
        self.speed = OnlineSpeed(model, engine)
        n = len(ids)
        # without a length model the planned lengths stand (as for ignore_eos rows)
        self.lengths = lengths or OnlineLengths(
            ["default"] * n, [-1] * n, problem.output_len, [True] * n, problem.output_len
        )
        self.predicted = np.asarray(predicted_finish_ms, np.float64).copy()
        self.plan_at_ms = 0.0
        # rows whose prediction the progress check trusts: those not yet admitted when the
        # plan was made (a row in flight is predicted from an estimate of its tokens so far)
        self.tracked: set[int] = set(range(len(ids)))
        self.progress: deque[tuple[float, float]] = deque(maxlen=self.config.drift_window)
        self.since_plan = 0
        self.first_ms: dict[int, float] = {}
        self.inflight: dict[int, None] = {}  # rows submitted and not done, submission order
        self.done_met: dict[int, bool] = {}
        self.done_e2e: dict[int, float] = {}
        self.records: list[dict] = []
        self.curves: list[dict] = []
        self._due: str | None = None
        self._thread: threading.Thread | None = None
        self._result: tuple | None = None
        self._lock = threading.Lock()
        clock_virtual = bool(getattr(engine, "virtual_clock", False))
        self.background = (
            not clock_virtual if self.config.background is None else self.config.background
        )
        met = self._predicted_met(self.predicted, predicted_first_ms)  # None: first = finish
        self._add_curve(0.0, "plan", self.predicted, met)

    # -- what the executor reports -------------------------------------------------------------
    def on_submit(self, rid: str, t_ms: float) -> None:
        row = self.row_of.get(rid)
        if row is None:
            return
        self.inflight[row] = None
        cap_tokens = int(self.lengths.caps[row])
        self.speed.observe_submit(rid, int(self.problem.input_len[row]), cap_tokens)

    def on_first_token(self, rid: str, t_ms: float) -> None:
        row = self.row_of.get(rid)
        if row is not None:
            self.first_ms.setdefault(row, t_ms)

    def on_complete(self, m) -> None:
        row = self.row_of.get(m.id)
        if row is None:
            return
        self.inflight.pop(row, None)
        if m.error is not None:
            self.done_met[row] = False
            return
        self.speed.observe_finish(m.id, m.input_tokens, m.output_tokens, m.finish_ms)
        self.lengths.observe(row, m.output_tokens)
        self.done_met[row] = self._met(row, m.first_token_ms, m.finish_ms, m.output_tokens)
        self.done_e2e[row] = float(m.finish_ms)
        pred = self.predicted[row]
        if np.isfinite(pred) and row in self.tracked:
            self.progress.append((float(m.finish_ms), float(pred)))
        self.since_plan += 1
        if self._due is None and len(self.records) < self.config.max_replans:
            drift = self.drift()
            if drift is not None:
                self._due = drift
            elif self.config.every and self.since_plan >= self.config.every:
                self._due = f"every {self.config.every}"

    def drift(self) -> str | None:
        """The reason to re-plan when measured progress left the prediction (module doc)."""
        if len(self.progress) < self.config.drift_window:
            return None
        m, p = np.array(sorted(self.progress)).T
        rate = float(np.polyfit(p, m, 1)[0]) - 1 if np.ptp(p) > 1.0 else 0.0
        offset = (m[-1] - p[-1]) / max(p[-1] - self.plan_at_ms, 1.0)
        if abs(rate) > self.config.rate_threshold:
            return f"drift (progress rate {100 * rate:+.0f}%)"
        if abs(offset) > self.config.drift_threshold:
            return f"drift (progress offset {100 * offset:+.0f}%)"
        return None

    def revise(self, pending_ids: list[str], now_ms: float):
        """A new (order of pending ids, cap), or None to keep going as before."""
        with self._lock:
            result, self._result = self._result, None
        if result is not None:
            self._thread = None
            return self._apply(result, pending_ids)
        if self._due is None or self._thread is not None:
            return None
        last = self.records[-1]["t_s"] if self.records else None
        if last is not None and now_ms / 1000.0 - last < self.config.min_interval_s:
            return None  # stays due: a re-plan costs the engine CPU on a small machine
        pending = [self.row_of[r] for r in pending_ids if r in self.row_of]
        for row in pending:  # a failed attempt waiting for its retry is pending again
            self.inflight.pop(row, None)
        reason, self._due = self._due, None
        if not pending:
            return None
        state, scale = self._snapshot(pending, now_ms)
        if self.on_start is not None:
            self.on_start(reason, len(pending), now_ms / 1000.0)
        if not self.background:
            return self._apply((reason, state, scale, self._run(state, scale)), pending_ids)
        self._thread = threading.Thread(
            target=self._background, args=(reason, state, scale), name="replan", daemon=True
        )
        self._thread.start()
        return None

    def close(self, timeout: float | None = None) -> None:
        """Wait for a re-plan in progress; it is recorded, with nothing left to re-order."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout if timeout is not None else 4 * self.config.budget_s + 60)
        with self._lock:
            result, self._result = self._result, None
        if result is not None:
            self._thread = None
            self._apply(result, [])

    # -- re-planning ---------------------------------------------------------------------------
    def _snapshot(self, pending: list[int], now_ms: float):
        out = self.lengths.predict(np.arange(len(self.ids)))
        problem = self.problem._replace(output_len=out.astype(np.int32))
        inflight = [(row, self.first_ms.get(row)) for row in self.inflight]
        state = JobState(now_ms, problem, dict(self.done_met), inflight, pending, self.cap)
        return state, self.speed.scale()

    def _run(self, state: JobState, scale: float):
        return replan(
            state,
            scaled_model(self.model, scale),
            objective=self.objective,
            budget_s=self.config.budget_s,
            seed=self.seed + len(self.records) + 1,
            done_e2e_ms=dict(self.done_e2e),
            planner=self.planner,
        )

    def _background(self, reason, state, scale) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: nice this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            choice = self._run(state, scale)
        except Exception as exc:  # a failed re-plan keeps the current order; the job goes on
            log.warning("re-plan failed (%s); keeping the current order", exc)
            choice = exc
        with self._lock:
            self._result = (reason, state, scale, choice)

    def _apply(self, result, pending_ids: list[str]):
        reason, state, scale, choice = result
        if isinstance(choice, Exception):
            self.records.append(_record(state, reason, None, scale, error=choice))
            return None
        self.records.append(_record(state, reason, choice, scale))
        forecast = choice.after
        self.predicted = np.where(
            np.isfinite(forecast.finish_ms), forecast.finish_ms, self.predicted
        )
        self.plan_at_ms = state.now_ms
        self.tracked = set(state.pending)
        self.progress.clear()
        self.since_plan = 0
        met = self._predicted_met(forecast.finish_ms, forecast.first_ms, state)
        self._add_curve(state.now_ms, reason, forecast.finish_ms, met)
        log.info(
            "re-plan at %.1f s (%s): predicted attainment %.1f%% -> %.1f%%%s",
            state.now_ms / 1000,
            reason,
            100 * choice.before.attainment,
            100 * choice.after.attainment,
            "" if choice.changed else " (order kept)",
        )
        if not choice.changed:
            return None
        self.cap = int(choice.cap)
        still = set(pending_ids)
        new = [self.ids[r] for r in choice.order if self.ids[r] in still]
        rest = [rid for rid in pending_ids if rid not in set(new)]
        return rest + new, self.cap

    # -- bookkeeping ---------------------------------------------------------------------------
    def _met(self, row: int, first_ms, finish_ms, out_tokens) -> bool:
        p = self.problem
        m = slo_metrics(
            np.array([first_ms if first_ms is not None else finish_ms], np.float64),
            np.array([finish_ms], np.float64),
            np.array([max(1, int(out_tokens or 1))]),
            p.slo_e2e_ms[row : row + 1],
            p.slo_ttft_ms[row : row + 1],
            p.slo_tpot_ms[row : row + 1],
        )
        return bool(m.met[0])

    def _predicted_met(self, finish, first, state: JobState | None = None) -> np.ndarray:
        p = self.problem if state is None else state.problem
        first = finish if first is None else np.where(np.isfinite(first), first, finish)
        live = np.isfinite(finish)
        m = slo_metrics(
            np.where(live, first, 0.0),
            np.where(live, finish, 0.0),
            p.output_len,
            p.slo_e2e_ms,
            p.slo_ttft_ms,
            p.slo_tpot_ms,
        )
        return np.asarray(m.met, bool) & live

    def _add_curve(self, t_ms: float, label: str, finish, met) -> None:
        """The predicted cumulative attainment from ``t_ms`` on: rows done so far (measured)
        plus the predicted hits by each later time."""
        w = np.asarray(self.problem.weight, np.float64)
        has = np.isfinite(self.problem.slo_e2e_ms) | np.isfinite(self.problem.slo_ttft_ms)
        has |= np.isfinite(self.problem.slo_tpot_ms)
        total = float(np.sum(w[has])) or 1.0
        base = sum(w[r] for r, hit in self.done_met.items() if hit and has[r])
        sel = met & has & np.isfinite(finish)
        times = np.asarray(finish)[sel]
        order = np.argsort(times, kind="stable")
        cum = base + np.cumsum(w[sel][order])
        pts = [(t_ms / 1000.0, base / total)]
        if len(times):
            keep = np.unique(
                np.linspace(0, len(times) - 1, min(CURVE_POINTS, len(times))).astype(int)
            )
            pts += [(float(times[order][k]) / 1000.0, float(cum[k]) / total) for k in keep]
        live = np.isfinite(finish)
        if live.any():  # flat to the last predicted finish
            pts.append((float(np.max(np.asarray(finish)[live])) / 1000.0, pts[-1][1]))
        self.curves.append({"from_s": t_ms / 1000.0, "label": label, "points": pts})

    def summary(self) -> dict:
        return {
            "replans": list(self.records),
            "curves": list(self.curves),
            "speed_scale": self.speed.scale(),
            "speed_source": self.speed.source,
            "lengths": self.lengths.summary(),
            "background": self.background,
            "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
        }


def _record(state: JobState, reason: str, choice, scale: float, error=None) -> dict:
    rec = {
        "t_s": state.now_ms / 1000.0,
        "reason": reason,
        "pending": len(state.pending),
        "inflight": len(state.inflight),
        "cap_before": state.cap,
        "speed_scale": scale,
    }
    if error is not None:
        rec.update(error=str(error), changed=False)
        return rec
    rec.update(
        predicted_attainment_before=choice.before.attainment,
        predicted_attainment_after=choice.after.attainment,
        cap_after=choice.cap,
        changed=choice.changed,
        plan_time_s=choice.plan_time_s,
    )
    return rec
