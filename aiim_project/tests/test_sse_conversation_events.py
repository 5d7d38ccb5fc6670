"""GET /api/aiim/conversations/{id}/events against real Daphne: ids, names and data as the
WebSocket's, resume by Last-Event-ID and ?since_seq= without gap or duplicate,
`recovered: false`, the heartbeat, a removed member's error, the token's expiry."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

from tests.support.http import fetch as rest
from tests.support.sse import open_sse, post_chunk, post_message

pytestmark = pytest.mark.e2e


def path(conversation_id: str) -> str:
    return f"/api/aiim/conversations/{conversation_id}/events"


def created(events) -> list[int]:
    return [e.json()["message"]["seq"] for e in events if e.name == "message.created"]


@pytest.fixture
def server(daphne):
    return daphne(1, SSE_HEARTBEAT_SECONDS="0.5", WS_RECOVERY_LIMIT="5")[0]


def test_events_carry_seq_ids_names_and_the_websocket_data(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    sse = open_sse(server, path(conversation.id), token=token("bob"))
    assert sse.status == 200 and sse.headers["content-type"].startswith("text/event-stream")
    first = sse.next()
    assert first.name == "subscribed" and first.json() == {"conversation_id": conversation.id, "last_seq": 0}

    async def ws_frames(n: int) -> list[dict]:
        async with connect(f"{server.ws_url}?token={token('bob')}") as ws:
            await ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation.id}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            # Past both subscriptions' tail reads (WS_GAP_WAIT_MS, 50 ms after subscribing):
            # a write that commits before a tail read reaches that subscription from the
            # database (a stream as a message.created with its text, without its chunk
            # event). The comparison below is of live events.
            await asyncio.sleep(0.3)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: [post_message(server, alice, conversation.id, f"m{i}") for i in range(n)])
            await loop.run_in_executor(None, lambda: post_chunk(server, alice, conversation.id, "s", "x", index=0, end=True))
            frames = []
            while len(frames) < n + 3:  # n messages, the stream's created, chunk, updated
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            return frames

    frames = asyncio.run(ws_frames(3))
    events = sse.until(lambda e: e.name == "message.updated")
    events = [e for e in events if not e.comment]
    assert [e.name for e in events] == [f["data"]["event"] for f in frames]
    assert [e.json() for e in events] == [f["data"] for f in frames]
    assert created(events) == [1, 2, 3, 4]
    # id: the seq of the last message.created sent, on every event.
    assert [int(e.id) for e in events] == [1, 2, 3, 4, 4, 4]
    sse.close()


def test_resume_with_last_event_id_and_since_seq_has_no_gap_and_no_duplicate(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    for i in range(4):
        post_message(server, alice, conversation.id, f"m{i}")
    sse = open_sse(server, path(conversation.id), token=token("bob"), query={"since_seq": 1})
    events = sse.until(lambda e: e.name == "message.created" and e.id == "4")
    assert created(events) == [2, 3, 4]
    assert events[0].name == "subscribed" and events[0].id == "1"
    sse.close()
    post_message(server, alice, conversation.id, "while away")
    # Last-Event-ID wins over the ?since_seq= still in the URL (as EventSource reconnects).
    again = open_sse(server, path(conversation.id), token=token("bob"), query={"since_seq": 1}, headers={"Last-Event-ID": "4"})
    events = again.until(lambda e: e.name == "message.created")
    assert created(events) == [5]
    post_message(server, alice, conversation.id, "live")
    assert created(again.until(lambda e: e.name == "message.created")) == [6]
    again.close()


def test_more_missed_than_the_recovery_limit_is_recovered_false(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    for i in range(8):
        post_message(server, token("alice"), conversation.id, f"m{i}")
    sse = open_sse(server, path(conversation.id), token=token("bob"), headers={"Last-Event-ID": "0"})
    first = sse.next()
    assert first.name == "subscribed"
    assert first.json() == {"conversation_id": conversation.id, "last_seq": 8, "recovered": False}
    assert first.id == "8"  # the client pages 1..8 over REST; a reconnect resumes after 8
    post_message(server, token("alice"), conversation.id, "live")
    assert created(sse.until(lambda e: e.name == "message.created")) == [9]
    sse.close()


def test_heartbeat_comment_while_idle(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    sse = open_sse(server, path(conversation.id), token=token("bob"))
    events = sse.until(lambda e: e.comment, timeout=5)
    assert events[-1].data == "ping"
    _, _, metrics = rest("GET", f"{server.url}/metrics")
    assert 'aiim_sse_streams{kind="events"} 1.0' in metrics
    sse.close()


def test_removed_member_gets_an_error_event_and_the_stream_ends(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    sse = open_sse(server, path(conversation.id), token=token("bob"))
    assert sse.next().name == "subscribed"
    status, _, _ = rest("DELETE", f"{server.url}/api/aiim/conversations/{conversation.id}/members/bob",
                        headers={"Authorization": f"Bearer {token('alice')}"})
    assert status == 204
    events = [e for e in sse.rest(timeout=10) if not e.comment]
    assert [e.name for e in events] == ["member.left", "error"]
    assert events[-1].json()["code"] == "forbidden"  # and the body ended: rest() returned


def test_stream_ends_when_the_token_expires(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    sse = open_sse(server, path(conversation.id), token=token("bob", ttl=2))
    started = time.monotonic()
    events = [e for e in sse.rest(timeout=10) if not e.comment]
    assert [e.name for e in events] == ["subscribed", "error"]
    assert events[-1].json()["code"] == "token_expired"
    assert time.monotonic() - started < 5


def test_bad_resume_point_is_a_400(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    sse = open_sse(server, path(conversation.id), token=token("bob"), headers={"Last-Event-ID": "abc"})
    assert sse.status == 400
    assert json.loads(sse.response.read())["code"] == "invalid"


def test_a_client_that_leaves_is_let_go_at_once(daphne, make_conversation, token):
    """The disconnect is noticed while the stream idles (long before a heartbeat would be
    written): the stream leaves the hub and the gauge goes back down."""
    server = daphne(1, SSE_HEARTBEAT_SECONDS="60")[0]
    conversation = make_conversation("alice", ("bob",))

    def open_streams() -> float:
        _, _, metrics = rest("GET", f"{server.url}/metrics")
        line = next((ln for ln in metrics.splitlines() if ln.startswith('aiim_sse_streams{kind="events"}')), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    streams = [open_sse(server, path(conversation.id), token=token("bob")) for _ in range(3)]
    for sse in streams:
        assert sse.next().name == "subscribed"
    assert open_streams() == 3
    for sse in streams:
        sse.close()
    deadline = time.monotonic() + 3
    while open_streams() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_streams() == 0


@pytest.mark.redis
def test_events_from_two_processes_arrive_in_seq_order_without_gap_or_duplicate(daphne, make_conversation, token):
    import threading

    a, b = daphne(2)
    conversation = make_conversation("alice", ("bob", "carol"))
    sse = open_sse(a, path(conversation.id), token=token("bob"))
    assert sse.next().name == "subscribed"
    errors: list[BaseException] = []

    def write(server, sender: str) -> None:
        try:
            for i in range(25):
                post_message(server, token(sender), conversation.id, f"{sender} {i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(a, "alice")), threading.Thread(target=write, args=(b, "carol"))]
    for w in writers:
        w.start()
    events = sse.until(lambda e: e.name == "message.created" and e.json()["message"]["seq"] == 50, timeout=30)
    for w in writers:
        w.join(30)
    assert errors == []
    assert created(events) == list(range(1, 51))
    ids = [int(e.id) for e in events if e.name == "message.created"]
    assert ids == list(range(1, 51))
    sse.close()
