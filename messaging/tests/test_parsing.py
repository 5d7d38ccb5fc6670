"""parse_message_send against MessageSendIn, the serializer it replaces on the send path:
the same validated data, or the same errors (messages and field order), input by input."""

from __future__ import annotations

import itertools
import random

import pytest
from rest_framework.exceptions import ValidationError

from aiim_project.errors import _flatten
from messaging.serializers import MessageSendIn, parse_message_send

MISSING = object()

CANDIDATES = {
    "conversation_id": [
        MISSING, "c1", "  c1  ", "", "   ", None, 7, 7.5, 0, True, False, [], ["c1"], {}, {"a": 1},
        "x" * 64, "x" * 65, " " + "x" * 64 + " ", "a\x00b", "\ud800x", "é" * 10, "x" * 65 + "\x00\udfff",
    ],
    "type": [MISSING, "text", "ai", "system", "image", "TEXT", "", " text", None, 1, True, ["text"], {"t": 1}, 1.5],
    "content": [MISSING, "hi", "", None, 0, False, [], {}, {"text": "x", "n": [1, 2.5, None]}, "\x00", [[[]]]],
    "reply_to": [MISSING, None, "m1", "", " ", 5, True, ["m"], "y" * 64, "y" * 65, "m\x00"],
    "client_msg_id": [MISSING, None, "k1", "", "  k1 ", 3.0, False, {}, "z" * 200, "z" * 201, "\udc80"],
    "metadata": [MISSING, None, {}, {"a": 1}, {"n": {"d": [1]}}, [], "", "x", 0, True],
    "tenant_id": [MISSING, "default", "other", "", None, 5, [], "t" * 200, "t" * 201],
}
VALID = {"conversation_id": "c1", "content": "hi"}


def body(**fields) -> dict:
    return {k: v for k, v in fields.items() if v is not MISSING}


def old(data):
    serializer = MessageSendIn(data=data)
    if serializer.is_valid():
        return "ok", {k: (v, type(v)) for k, v in serializer.validated_data.items()}
    return "errors", _flatten(serializer.errors)


def new(data):
    try:
        validated = parse_message_send(data)
    except ValidationError as exc:
        return "errors", _flatten(exc.detail)
    return "ok", {k: (v, type(v)) for k, v in validated.items()}


def cases():
    for name, values in CANDIDATES.items():
        for value in values:
            yield body(**{**VALID, name: value})
    rng = random.Random(20261202)
    for _ in range(1500):
        yield body(**{name: rng.choice(values) for name, values in CANDIDATES.items()})
    for a, b in itertools.combinations(CANDIDATES, 2):
        yield body(**{a: CANDIDATES[a][-1], b: CANDIDATES[b][-2]})
    yield {}
    yield {**VALID, "unknown": 1}


def test_same_result_as_the_serializer_for_every_json_object():
    checked = 0
    for data in cases():
        assert new(data) == old(data), data
        checked += 1
    assert checked > 1500


def test_error_order_follows_the_fields():
    data = {"tenant_id": None, "metadata": [], "client_msg_id": "", "reply_to": 1.5, "content": None, "type": "no", "conversation_id": ""}
    status, errors = new(data)
    assert status == "errors" and list(errors) == ["conversation_id", "type", "content", "client_msg_id", "metadata", "tenant_id"]
    assert (status, errors) == old(data)


@pytest.mark.parametrize("data", [None, [], [VALID], "text", 5, True])
def test_a_body_that_is_not_an_object_goes_through_the_serializer(data):
    assert new(data) == old(data)
    assert new(data)[0] == "errors"


def test_a_form_body_goes_through_the_serializer():
    from django.http import QueryDict

    form = QueryDict("conversation_id=c1&content=%22hi%22&type=ai")
    assert new(form) == old(form)
