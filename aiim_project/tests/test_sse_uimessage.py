"""The UI message stream encoder: parts in the AI SDK's order, whatever order it is fed."""

from __future__ import annotations

import json

import pytest

from aiim_project.gateway.sse.uimessage import UIMessageEncoder, end_kind


def parts(data: bytes) -> list:
    out = []
    for event in data.decode().split("\n\n"):
        if not event:
            continue
        assert event.startswith("data: ") and "\n" not in event, event
        body = event[len("data: "):]
        out.append(body if body == "[DONE]" else json.loads(body))
    return out


def types(data: bytes) -> list[str]:
    return [p if isinstance(p, str) else p["type"] for p in parts(data)]


def test_reasoning_then_text_then_finish_with_metadata():
    enc = UIMessageEncoder("m1", {"seq": 4})
    out = enc.start() + enc.reasoning("think") + enc.reasoning(" more") + enc.text("Hel") + enc.text("lo")
    out += enc.reasoning("late reasoning is dropped") + enc.end("completed", metadata={"state": "completed"})
    assert types(out) == [
        "start", "start-step", "reasoning-start", "reasoning-delta", "reasoning-delta", "reasoning-end",
        "text-start", "text-delta", "text-delta", "text-end", "finish-step", "finish", "[DONE]",
    ]
    p = parts(out)
    assert p[0] == {"type": "start", "messageId": "m1", "messageMetadata": {"seq": 4}}
    assert p[-2] == {"type": "finish", "finishReason": "stop", "messageMetadata": {"seq": 4, "state": "completed"}}


def test_start_is_implied_and_parts_are_never_repeated():
    enc = UIMessageEncoder("m1")
    out = enc.text("a") + enc.start() + enc.text("") + enc.end("completed") + enc.end("failed") + enc.text("after")
    assert types(out) == ["start", "start-step", "text-start", "text-delta", "text-end", "finish-step", "finish", "[DONE]"]
    assert "messageMetadata" not in parts(out)[0]


@pytest.mark.parametrize(
    ("state", "tail"),
    [("completed", ["finish"]), (None, ["finish"]), ("stopped", ["abort", "finish"]),
     ("failed", ["error"]), ("aborted", ["error"])],
)
def test_end_by_state(state, tail):
    enc = UIMessageEncoder("m1")
    out = enc.text("x") + enc.end(state)
    assert types(out)[-len(tail) - 2:] == ["finish-step", *tail, "[DONE]"]
    if tail == ["error"]:
        assert parts(out)[-2]["errorText"]
    assert end_kind(state) == {"finish": "finish", "abort": "abort", "error": "error"}[tail[0]]


def test_fail_before_any_text():
    enc = UIMessageEncoder("m1")
    out = enc.fail("You are no longer a member of this conversation.")
    assert types(out) == ["start", "start-step", "finish-step", "error", "[DONE]"]
    assert parts(out)[3]["errorText"] == "You are no longer a member of this conversation."
