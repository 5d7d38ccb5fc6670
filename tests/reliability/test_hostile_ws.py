"""Hostile WebSocket input through a real Daphne: a bad frame gets an error frame and the
connection stays open; nothing ever answers `server_error` or closes with 1011.

Every frame type is fuzzed with hypothesis on one long-lived connection. After each fuzzed
frame the test sends a `ping` and waits for its `pong`: the pong proves the connection
survived and that the server has finished with the fuzzed frame (frames are handled in
order), so whatever the fuzzed frame caused arrives before it.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from tests.support.http import http
from tests.support.websocket import ws_open, ws_recv, ws_request, ws_send

pytestmark = pytest.mark.e2e

FRAME_TYPES = [
    "subscribe", "unsubscribe", "send_msg", "stream_chunk", "stream_abort", "delivered", "read", "typing", "ping", "pong",
]
METACHARACTERS = ["%", "_", "%%", "' OR '1'='1", "\\", "\x00", "a" * 300, "../..", "\u202e", "😀", ""]


class Session:
    """One real connection, driven from synchronous hypothesis examples."""

    def __init__(self, ws_url: str, token: str):
        self.loop = asyncio.new_event_loop()
        self.ws = self.loop.run_until_complete(ws_open(ws_url, token))

    def exchange(self, payload: str | bytes) -> list[dict]:
        return self.loop.run_until_complete(self._exchange(payload))

    async def _exchange(self, payload: str | bytes) -> list[dict]:
        await self.ws.send(payload)
        marker = uuid.uuid4().hex
        await ws_send(self.ws, {"type": "ping", "req_id": marker})
        frames = []
        while True:
            frame = await ws_recv(self.ws, 15)
            if frame.get("type") == "pong" and frame.get("req_id") == marker:
                return frames
            frames.append(frame)

    def close(self) -> None:
        self.loop.run_until_complete(self.ws.close())
        self.loop.close()


def assert_no_server_error(frames: list[dict]) -> None:
    for frame in frames:
        if frame.get("type") == "error":
            assert frame["code"] != "server_error", frame
            assert isinstance(frame["code"], str) and isinstance(frame["message"], str), frame


@pytest.fixture
def target(daphne, make_conversation, token):
    conversation = make_conversation("alice", others=("bob",))
    foreign = make_conversation("mallory", others=("eve",), tenant="other")
    server = daphne(1)[0]
    return server, conversation, foreign


def json_values(ids):
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30), ids,
    )
    return st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6)


def frames_strategy(conversation_id: str, foreign_id: str):
    ids = st.one_of(st.sampled_from([conversation_id, foreign_id, *METACHARACTERS]), st.text(max_size=40))
    numbers = st.one_of(
        st.integers(min_value=-(2**80), max_value=2**80), st.sampled_from([0, 1, 2**31, 2**62, 2**63, 2**64, -1]),
        st.floats(), st.booleans(), st.none(), st.text(max_size=4),
    )
    values = json_values(ids)
    fields = {
        "conversation_id": ids, "since_seq": numbers, "content": values, "msg_type": st.one_of(st.sampled_from(["text", "ai", "system", "bogus"]), values),
        "client_msg_id": st.one_of(ids, values), "reply_to": st.one_of(ids, values), "metadata": values,
        "chunk": st.one_of(st.text(max_size=50), values), "stream_end": st.one_of(st.booleans(), values),
        "chunk_index": numbers, "message_id": st.one_of(ids, values), "up_to_seq": numbers, "last_read_seq": numbers,
        "state": st.one_of(st.sampled_from(["typing", "thinking", "idle", "TYPING"]), values), "req_id": st.one_of(st.text(max_size=10), values),
        "tenant_id": st.one_of(st.sampled_from(["default", "other"]), values), "user_id": st.one_of(ids, values),
    }
    typed = st.one_of(*(st.fixed_dictionaries({"type": st.just(t)}, optional=fields) for t in FRAME_TYPES))
    untyped = st.dictionaries(st.sampled_from([*fields, "type"]), values, max_size=4)
    return st.one_of(typed, typed, typed, untyped, values)


def test_fuzzed_frames_of_every_type_never_break_the_connection(target, token):
    server, conversation, foreign = target
    session = Session(server.ws_url, token("alice"))
    seen_types: set[str] = set()

    @hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(frame=frames_strategy(conversation.id, foreign.id))
    def run(frame):
        if isinstance(frame, dict) and isinstance(frame.get("type"), str):
            seen_types.add(frame["type"])
        try:
            text = json.dumps(frame)
        except ValueError:
            return
        assert_no_server_error(session.exchange(text))

    try:
        run()
    finally:
        session.close()
    assert seen_types >= set(FRAME_TYPES)
    # The fuzzed frames never reached the other tenant's conversation.
    from messaging.models import Message

    assert not Message.objects.filter(conversation_id=foreign.id).exists()


MALFORMED = {
    "not-json": "not json", "truncated": "{", "array": "[]", "number": "1", "string": '"subscribe"', "null": "null",
    "empty": "{}", "type-int": '{"type": 5}', "type-unknown": '{"type": "nope"}', "type-null": '{"type": null}',
    "deep-array": "[" * 100_000, "deep-object": '{"a":' * 5_000 + "1" + "}" * 5_000,
    "deep-content": '{"type": "send_msg", "conversation_id": "x", "content": ' + "[" * 2000 + "]" * 2000 + "}",
    "huge-float": '{"type": "subscribe", "conversation_id": "x", "since_seq": 1e400}',
    "huge-seq": '{"type": "subscribe", "conversation_id": "x", "since_seq": 100000000000000000000000}',
    "lone-surrogate-id": '{"type": "subscribe", "conversation_id": "\\ud800"}',
    "nul-content": '{"type": "send_msg", "conversation_id": "x", "content": "\\u0000"}',
    "binary": b"\x00\x01binary",
}


def test_malformed_frames_get_an_error_and_the_connection_stays(target, token):
    server, conversation, _ = target
    session = Session(server.ws_url, token("alice"))
    try:
        for name, payload in MALFORMED.items():
            if isinstance(payload, str):
                payload = payload.replace('"x"', json.dumps(conversation.id))
            frames = session.exchange(payload)
            assert_no_server_error(frames)
            assert frames and all(f["type"] in ("error", "ack", "subscribed", "event") for f in frames), (name, frames)
    finally:
        session.close()


def test_oversized_frames(target, token, settings):
    server, conversation, _ = target

    async def scenario():
        ws = await ws_open(server.ws_url, token("alice"))
        # Over MAX_MESSAGE_BYTES: refused with too_large, the connection stays.
        big = {"type": "send_msg", "conversation_id": conversation.id, "content": "x" * (settings.MAX_MESSAGE_BYTES + 10)}
        assert (await ws_request(ws, big))["code"] == "too_large"
        assert (await ws_request(ws, {"type": "ping"}))["type"] == "pong"
        # Over Daphne's WebSocket message limit (1 MiB): the server closes with 1009, a
        # protocol-level refusal that never reaches the application.
        huge = json.dumps({"type": "send_msg", "conversation_id": conversation.id, "content": "x" * (2 * 2**20)})
        with pytest.raises(ConnectionClosed) as closed:
            # The refusal can overtake the client's own write, so the send may raise too.
            await ws.send(huge)
            await ws_recv(ws, 10)
        return closed.value.rcvd.code if closed.value.rcvd else None

    # 1009, or no close frame when the server drops the socket while the client is still writing.
    assert asyncio.run(scenario()) in (1009, None)
    assert http(server.url, "GET", "/health/live").status == 200


def test_invalid_utf8_text_frame_is_a_protocol_error_not_a_crash(target, token):
    """RFC 6455 requires failing the connection on a text frame that is not UTF-8: Daphne
    (autobahn, failByDrop) drops the TCP connection, or closes with 1007. Never 1011, and
    everyone else is still served."""
    server, _, _ = target

    async def scenario():
        ws = await ws_open(server.ws_url, token("alice"))
        await ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await ws_recv(ws, 10)
        other = await ws_open(server.ws_url, token("bob"))
        pong = await ws_request(other, {"type": "ping"})
        await other.close()
        return closed.value.rcvd.code if closed.value.rcvd else None, pong

    code, pong = asyncio.run(scenario())
    assert code in (1007, None)
    assert pong["type"] == "pong"
