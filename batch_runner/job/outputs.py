"""Writing what a finished job reports: the summary as strict JSON (``_json_ready``,
``_write_bytes``: atomic) and the HTML report (``_write_report``, ``batch_runner.report``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _json_ready(value: Any) -> Any:
    """Strict JSON: NaN/inf become null, NumPy scalars Python numbers, keys strings."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_report(results_path: Path, summary: dict, report_path: Path) -> None:
    try:
        from batch_runner.report import write_report
    except ImportError:
        log.warning("the HTML report module is not available yet; no report written")
        return
    write_report(results_path, summary, report_path)
