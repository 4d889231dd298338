"""Terminal progress for a running job: rows done, SLO attainment so far, ETA (tqdm, stderr).

Attainment so far is over finished rows that have an SLO (errors count as misses), weighted
like ``sajax.metrics.attainment``. ``quiet=True`` turns the bar off.

    with JobProgress(total=1000, initial=200, quiet=False) as bar:
        bar.update(met=True, weight=1.0)
"""

from __future__ import annotations

import sys

from tqdm import tqdm


class JobProgress:
    """A tqdm bar over rows with a running SLO-attainment postfix."""

    def __init__(self, total: int, *, initial: int = 0, quiet: bool = False, desc: str = "rows"):
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit="row",
            file=sys.stderr,
            disable=quiet,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        self.hit_weight = 0.0
        self.slo_weight = 0.0
        self.errors = 0

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
        if error:
            self.errors += 1
        if met is not None:
            self.slo_weight += weight
            self.hit_weight += weight * float(met)
        postfix = {}
        if self.attainment is not None:
            postfix["SLO"] = f"{100.0 * self.attainment:.1f}%"
        if self.errors:
            postfix["errors"] = self.errors
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> JobProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
