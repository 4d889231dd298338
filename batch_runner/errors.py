"""Errors a user can cause and fix: bad request files, bad preset files, unwritable outputs.

Each is a ``click.ClickException`` with exit code 2, so wherever one is raised under the CLI the
user sees one paragraph (``Error: ...``) on stderr and no traceback; library callers catch
``UserError`` (or a subclass) like any exception. Messages name the file, the column and the
row ids (the first few and a count) and say what to change::

    raise InputError(
        f"{path}: column 'slo_e2e_ms' is negative in {format_rows(ids, count)}.",
        path=path, column="slo_e2e_ms", row_ids=ids, row_count=count,
    )
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

EXIT_USER_ERROR = 2  # click's own usage errors exit 2 as well


class UserError(click.ClickException):
    """Something the user can change (an input, a config, a path); exit code 2, no traceback."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


class InputError(UserError):
    """The request file cannot be used as given (unreadable, wrong schema, bad rows)."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        column: str | None = None,
        row_ids: Sequence[str] = (),
        row_count: int = 0,
    ) -> None:
        super().__init__(message, path=path)
        self.column = column
        self.row_ids = tuple(row_ids)  # the first few offending row ids (or "row N" labels)
        self.row_count = row_count  # how many rows are affected in total


class ConfigError(UserError):
    """A configuration file (SLO presets, engine profile) is missing or malformed."""


class OutputError(UserError):
    """An output file cannot be written (missing directory, permissions, disk full)."""


def format_rows(ids: Sequence[str], count: int, limit: int = 5) -> str:
    """``'3 rows (ids: a, b, c)'`` / ``'120 rows (ids: a, b, c, d, e and 115 more)'``.

    ``ids`` has one label per row (the first rows affected); a repeated id is named once.
    """
    first = [str(i) for i in list(ids)[:limit]]
    shown = list(dict.fromkeys(first))
    noun = "row" if count == 1 else "rows"
    if not shown:
        return f"{count} {noun}"
    label = "id" if len(shown) == 1 else "ids"
    more = count - len(first)
    tail = f" and {more} more" if more > 0 else ""
    return f"{count} {noun} ({label}: {', '.join(shown)}{tail})"
