"""Every request shape the contract accepts, read from a file and run on the real llamacpp engine.

The shapes are the README's: a prompt, or a chat whose roles are system (first only), user,
assistant and tool, with a user message, ending with a user or tool message. Each is read by
``read_requests``, turned into an engine request by the job's own ``_engine_requests`` and run on
SmolLM2-135M: the engine answers it (text, no error), and the templated prompt holds every message
in order, under its role. The shapes the contract refuses are checked in test_request_contract.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_runner.engines.base import Finished, SamplingParams
from batch_runner.job import _engine_requests
from batch_runner.requests import MESSAGES_TYPE, read_requests

from .test_engine_llamacpp import _MISSING, _engine, run


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


ACCEPTED = {
    "prompt": ("What is 2 + 2?", None),
    "user": (None, chat(("user", "Name a colour."))),
    "system, user": (None, chat(("system", "Answer in one word."), ("user", "Name a fruit."))),
    "multi-turn": (
        None,
        chat(("user", "Hi."), ("assistant", "Hello! How can I help?"), ("user", "Name a tree.")),
    ),
    "tool result last": (
        None,
        chat(
            ("system", "You use tools."),
            ("user", "What is the weather in Paris?"),
            ("assistant", "Let me look it up."),
            ("tool", "Paris: 18 C, sunny."),
        ),
    ),
}


@pytest.fixture(scope="module")
def accepted_requests(tmp_path_factory):
    path = tmp_path_factory.mktemp("chats") / "shapes.parquet"
    pq.write_table(
        pa.table(
            {
                "id": list(ACCEPTED),
                "prompt": pa.array([p for p, _ in ACCEPTED.values()], pa.string()),
                "messages": pa.array([m for _, m in ACCEPTED.values()], MESSAGES_TYPE),
                "max_new_tokens": [6] * len(ACCEPTED),
            }
        ),
        path,
    )
    table = read_requests(path).table  # every shape passes the contract (InputError if not)
    assert table["id"].to_pylist() == list(ACCEPTED)
    return _engine_requests(table, SamplingParams())


@pytest.mark.llamacpp
@pytest.mark.skipif(bool(_MISSING), reason="; ".join(_MISSING) or "-")
def test_every_accepted_shape_is_answered_by_the_llamacpp_engine(accepted_requests):
    engine = _engine(2)
    try:
        seen = run(engine, accepted_requests)
        for request in accepted_requests:
            final = seen[request.id]["final"]
            assert isinstance(final, Finished), (request.id, final)
            assert final.text.strip(), f"no text for {request.id}"
            assert 1 <= final.output_tokens <= 6
            assert final.input_tokens == engine.count_tokens(request)
            messages = request.messages or ({"role": "user", "content": request.prompt},)
            text = engine._template.render(list(messages))
            at = [text.index(f"{m['role']}\n{m['content']}") for m in messages]
            assert at == sorted(at), request.id  # every turn, in order, under its own role
            assert text.rstrip().endswith("assistant")  # the engine writes the next turn
    finally:
        engine.stop()
