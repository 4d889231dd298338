"""The request contract: what a request file may hold, column by column, in one place.

``sajax validate``, ``sajax-batch``, ``sajax plan`` and the library all read requests with
``batch_runner.requests.read_requests``, which applies this contract (README "The request file"
is the same table). One row is one request; every column but ``prompt`` / ``messages`` is
optional:

======================  ====================================  =====================================
column                  type and range                        when the row leaves it empty (null)
======================  ====================================  =====================================
id                      string (or integer), unique           the row number ("0", "1", ...)
prompt                  string, 1 byte to 16 MiB              fine if ``messages`` is given
messages                list<struct<role, content: string>>  fine if ``prompt`` is given
task                    non-empty string                      "default"
max_new_tokens          integer, 1 to 2**20                   task preset, else 256
slo_e2e_ms/_ttft/_tpot  number, 0 to 1e10 ms (~115 days)      task preset, else null (= no SLO)
weight                  number, 1e-6 to 1e6                   1.0
output_tokens_hint      integer, 0 to 2**20                   null (= predict it)
ignore_eos              bool                                  False
======================  ====================================  =====================================

Why these bounds: they are far beyond any real request (no model writes 2**20 tokens for one
request; an engine whose context is smaller fails that row as an error row), and they keep the
arithmetic of the planner and the summary finite: a token count fits int32 and float32 exactly
(2**20 < 2**24), a weighted sum grows by at most 1e6 a row (float32 holds 3.4e38), and times and
SLOs up to 1e10 ms keep float32's relative precision (~1e-7). NaN and infinite numbers are outside
every range. Not covered: the planner numbers engine iterations in int32, so more than ~1000 rows
per engine slot that each really generate 2**20 tokens would overflow it (no real job is near).

Chats (``messages``): each message's role is one of ``CHAT_ROLES`` (system, user, assistant,
tool; lower case, as chat templates spell them); a system message may only come first; the chat
has at least one user message; and it ends with a user or tool message, since the engine writes
the assistant's next turn. A row sets ``prompt`` or ``messages``, not both (a prompt is one user
message; with both, which one was meant is a guess).

Input columns named like a column the job adds (``OUTPUT_COLUMNS`` in the results,
``reject_row`` / ``reject_reason`` in the rejects file) are kept, renamed ``input_<name>``
(``input_input_<name>`` if that is taken too, and so on) in the file where they would clash;
the command says so in one line per column.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from batch_runner.errors import InputError

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)
SLO_COLUMNS = ("slo_e2e_ms", "slo_ttft_ms", "slo_tpot_ms")
NORMALIZED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("messages", MESSAGES_TYPE),
        ("task", pa.string()),
        ("max_new_tokens", pa.int64()),
        *[(name, pa.float64()) for name in SLO_COLUMNS],
        ("weight", pa.float64()),
        ("output_tokens_hint", pa.int64()),
        ("ignore_eos", pa.bool_()),
    ]
)
NORMALIZED_COLUMNS = tuple(NORMALIZED_SCHEMA.names)
REJECT_COLUMNS = ("reject_row", "reject_reason")
# What the job adds to each row in the results (documented in batch_runner.results).
OUTPUT_COLUMNS = pa.schema(
    [
        ("output_text", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),
        ("rank", pa.int64()),
        ("ttft_ms", pa.float64()),
        ("tpot_ms", pa.float64()),
        ("e2e_ms", pa.float64()),
        ("slo_met", pa.bool_()),
        ("predicted_e2e_ms", pa.float64()),
        ("engine", pa.string()),
    ]
)
RESULT_COLUMNS = tuple(OUTPUT_COLUMNS.names)  # added by the job: an input column is renamed

DEFAULT_TASK = "default"
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_WEIGHT = 1.0
MAX_TEXT_BYTES = 16 * 1024 * 1024
MAX_NEW_TOKENS = 2**20
MAX_SLO_MS = 1e10
MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6
CHAT_ROLES = ("system", "user", "assistant", "tool")
LAST_ROLES = ("user", "tool")  # what a chat may end with: the engine writes the next turn


class Range(NamedTuple):
    """A numeric column's closed range ``low <= value <= high``; NaN and inf are outside."""

    low: float
    high: float
    unit: str = ""

    def below(self) -> str:
        """The problem of a value under ``low``."""
        if self.low == 0:
            return "is negative"
        return "is 0 or negative" if self.low == 1 else f"is below {_number(self.low)}"

    def above(self) -> str:
        """The problem of a value over ``high``."""
        return f"is larger than {_number(self.high)}{self.unit}"

    def span(self) -> str:
        return f"{_number(self.low)} to {_number(self.high)}"


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


RANGES = {
    "max_new_tokens": Range(1, MAX_NEW_TOKENS),
    "output_tokens_hint": Range(0, MAX_NEW_TOKENS),
    **{name: Range(0.0, MAX_SLO_MS, " ms") for name in SLO_COLUMNS},
    "weight": Range(MIN_WEIGHT, MAX_WEIGHT),
}

HINTS = {
    "id": "Ids must be non-null and unique (leave out the id column to number the rows).",
    "prompt": "Every row needs a non-empty prompt or a non-empty messages list, not both.",
    "messages": (
        "Messages are a non-empty list of {role, content}, none of them null; roles are "
        "system (first only), user, assistant or tool; a chat has a user message and ends "
        "with a user or tool message."
    ),
    "task": "A task is a non-empty name (leave it null for 'default').",
    "max_new_tokens": (
        f"max_new_tokens is {RANGES['max_new_tokens'].span()} (leave it null for the task's "
        "preset)."
    ),
    "slo": f"SLOs are {RANGES['slo_e2e_ms'].span()} ms; leave a cell null for no such SLO.",
    "weight": f"Weights are {RANGES['weight'].span()} (leave it null for 1.0).",
    "output_tokens_hint": (
        f"output_tokens_hint is {RANGES['output_tokens_hint'].span()} (leave it null to predict "
        "it)."
    ),
}


def hint(column: str) -> str:
    """What to tell a user about a column's rows (the SLO columns share one hint)."""
    return HINTS.get("slo" if column.startswith("slo_") else column, "")


# --- columns: a wrong type refuses the whole file --------------------------------------------

ACCEPTED = {  # column -> kinds of Arrow type it may have (after dictionary decoding)
    "id": ("string", "integer"),
    "prompt": ("string", "null"),
    "messages": ("messages", "null"),
    "task": ("string", "null"),
    "max_new_tokens": ("integer", "null"),
    **{name: ("integer", "float", "null") for name in SLO_COLUMNS},
    "weight": ("integer", "float", "null"),
    "output_tokens_hint": ("integer", "null"),
    "ignore_eos": ("bool", "null"),
}
EXPECTED = {  # what to tell the user a column should be
    "id": "string or integer",
    "prompt": "string",
    "messages": "list of struct<role: string, content: string> (exactly these two fields)",
    "task": "string",
    "max_new_tokens": "integer (pandas: .astype('Int64'))",
    **{name: "float or integer, milliseconds" for name in SLO_COLUMNS},
    "weight": "float or integer",
    "output_tokens_hint": "integer (pandas: .astype('Int64'))",
    "ignore_eos": "bool",
}


def kind(t: pa.DataType) -> str:
    """The contract's name for an Arrow type: string, integer, float, bool, messages, ..."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):
        return "null"
    if is_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_message(t.value_type):
        return "messages"
    return "other"


def is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_message(t: pa.DataType) -> bool:
    if not pa.types.is_struct(t) or t.num_fields != 2:
        return False
    fields = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
    return set(fields) == {"role", "content"} and all(is_string(x) for x in fields.values())


def check_schema(schema: pa.Schema, path: Path) -> None:
    """Raise ``InputError`` for a problem of a whole column (whatever ``on_bad_rows`` says)."""
    names = schema.names
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(
            f"{path} has more than one column named {', '.join(map(repr, repeated))}; "
            "column names must be unique.",
            path=path,
            column=repeated[0],
        )
    if "prompt" not in names and "messages" not in names:
        raise InputError(
            f"{path} has neither a 'prompt' nor a 'messages' column (it has: "
            f"{', '.join(names) or 'no columns'}); every request needs a prompt (string) or "
            "messages (list of {role, content}). Column names are case-sensitive.",
            path=path,
            column="prompt",
        )
    wrong = [
        (f.name, f.type)
        for f in schema
        if f.name in ACCEPTED and kind(f.type) not in ACCEPTED[f.name]
    ]
    if wrong:
        detail = "; ".join(
            f"column '{name}' is {t}, expected {EXPECTED[name]}" for name, t in wrong
        )
        raise InputError(
            f"{path} has columns of the wrong type: {detail}. This is a problem of the whole "
            "column, so --on-bad-rows=skip cannot set rows aside; convert the column and write "
            "the file again.",
            path=path,
            column=wrong[0][0],
        )


# --- column names the job adds ----------------------------------------------------------------


INPUT_PREFIX = "input_"


def renamed_clashes(names: Iterable[str], reserved: Iterable[str]) -> dict[str, str]:
    """``{name: new name}`` for the ``names`` that are ``reserved``: ``input_<name>``, or
    ``input_input_<name>`` (and so on) while that is taken by another column or a reserved one.

    The one rule for input columns named like a column the job writes (README "Results")."""
    names, reserved = list(names), set(reserved)
    taken = set(names) | reserved
    renames = {}
    for name in names:
        if name in reserved:
            new = INPUT_PREFIX + name
            while new in taken:
                new = INPUT_PREFIX + new
            taken.add(new)
            renames[name] = new
    return renames


def result_renames(input_names: Iterable[str]) -> dict[str, str]:
    """Input columns that would clash with an output column -> the name they get in the results."""
    return renamed_clashes(input_names, RESULT_COLUMNS)


def reject_renames(input_names: Iterable[str]) -> dict[str, str]:
    """Input columns named reject_row / reject_reason -> their name in the rejects file."""
    return renamed_clashes(input_names, REJECT_COLUMNS)


def rename_notices(renames: dict[str, str], where: str) -> list[str]:
    return [
        f"input column {old!r} is kept as {new!r} in the {where} (the job writes its own {old!r})"
        for old, new in renames.items()
    ]
