"""Progress of a running job: rows done, SLO attainment so far, rate, ETA (stderr).

On a terminal it is a live tqdm bar. When stderr is not a terminal (a nightly job's log file, a
pipe, CI), a redrawn bar would be one long line of frames, so it writes plain lines instead: one
when another ``fraction`` (10 %) of the rows is done or ``interval_s`` (10 s) has passed since
the last line (checked as rows finish), whichever comes first, with one at the first row and
one at the end::

    rows 60/200 (30%)  SLO 55.0%  0.8 rows/s  ETA 2m55s  elapsed 1m15s

Attainment so far is over finished rows that have an SLO (errors count as misses), weighted
like ``sajax.metrics.attainment``. ``quiet=True`` turns both off.

    with JobProgress(total=1000, initial=200, quiet=False) as bar:
        bar.update(met=True, weight=1.0)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 10.0
LINE_FRACTION = 0.1


class JobProgress:
    """Rows done with a running SLO attainment: a tqdm bar on a terminal, else plain lines."""

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        quiet: bool = False,
        desc: str = "rows",
        stream: TextIO | None = None,
        interval_s: float = LINE_INTERVAL_S,
        fraction: float = LINE_FRACTION,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.done, self.desc = total, initial, desc
        self.hit_weight = 0.0
        self.slo_weight = 0.0
        self.errors = 0
        self.lines = not quiet and not _is_terminal(self.stream)
        self._bar = None
        if not quiet and not self.lines:
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="row",
                file=self.stream,
                dynamic_ncols=True,
                smoothing=0.1,
            )
        self._clock, self._interval, self._fraction = clock, interval_s, fraction
        self._start = self._last_time = clock()
        self._initial = initial
        self._last_done = initial
        self._closed = False
        self._started = False  # the first line (at the first row) says where the rows started

    @property
    def attainment(self) -> float | None:
        return self.hit_weight / self.slo_weight if self.slo_weight > 0 else None

    def seed(self, *, met, weight, errors: int) -> None:
        """Count rows finished before (a resumed job) in the attainment; the bar's ``initial``
        already counts them as done."""
        for m, w in zip(met, weight, strict=True):
            if m is not None:
                self.slo_weight += float(w)
                self.hit_weight += float(w) * float(m)
        self.errors += errors

    def update(self, *, met: bool | None, weight: float = 1.0, error: bool = False) -> None:
        """One finished row; ``met`` None = best-effort row (no SLO)."""
        if self.lines and not self._started:
            self._started = True
            self._line(self._start)
        if error:
            self.errors += 1
        if met is not None:
            self.slo_weight += weight
            self.hit_weight += weight * float(met)
        self.done += 1
        if self._bar is not None:
            postfix = {}
            if self.attainment is not None:
                postfix["SLO"] = f"{100.0 * self.attainment:.1f}%"
            if self.errors:
                postfix["errors"] = self.errors
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(1)
        elif self.lines:
            now = self._clock()
            step = max(1, int(self._fraction * self.total))
            if now - self._last_time >= self._interval or self.done - self._last_done >= step:
                self._line(now)

    def line(self) -> str:
        """The plain progress line for now (what a log file gets)."""
        return self._format(self._clock())

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.lines and self.done != self._last_done:
            self._line(self._clock())

    def __enter__(self) -> JobProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self, now: float) -> None:
        print(self._format(now), file=self.stream, flush=True)
        self._last_time, self._last_done = now, self.done

    def _format(self, now: float) -> str:
        elapsed = now - self._start
        share = self.done / self.total if self.total else 1.0
        parts = [f"{self.desc} {self.done}/{self.total} ({100.0 * share:.0f}%)"]
        if self.attainment is not None:
            parts.append(f"SLO {100.0 * self.attainment:.1f}%")
        if self.errors:
            parts.append(f"errors {self.errors}")
        ran = self.done - self._initial
        if ran > 0 and elapsed > 0:
            rate = ran / elapsed
            parts.append(f"{rate:.2f} rows/s")
            if self.done < self.total:
                parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        return "  ".join(parts)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
