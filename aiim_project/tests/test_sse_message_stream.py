"""GET /api/aiim/messages/{conversation_id}/{message_id}/stream against real Daphne: the UI
message stream parsed part by part for a live, an ended, a stopped, a failed and an aborted
stream, and a reader joining a 500-chunk stream at a random point."""

from __future__ import annotations

import random
import threading

import pytest

from messaging.models import Message
from tests.support.sse import ChunkPoster, open_sse, post_chunk, text_of, ui_parts

pytestmark = pytest.mark.e2e

HEADER = "x-vercel-ai-ui-message-stream"


def path(conversation_id: str, message_id: str) -> str:
    return f"/api/aiim/messages/{conversation_id}/{message_id}/stream"


def assert_shape(parts: list, message_id: str, ending: list[str]) -> None:
    """start, start-step, [text-start, text-delta..., text-end], finish-step, <ending>, [DONE]."""
    types = [p["type"] if isinstance(p, dict) else p for p in parts]
    assert types[:2] == ["start", "start-step"], types
    assert parts[0]["messageId"] == message_id
    middle = types[2 : len(types) - len(ending) - 2]
    if middle:
        assert middle[0] == "text-start" and middle[-1] == "text-end", types
        assert set(middle[1:-1]) == {"text-delta"}, types
        ids = {p["id"] for p in parts if isinstance(p, dict) and p["type"].startswith("text-")}
        assert len(ids) == 1
    assert types[len(types) - len(ending) - 2 :] == ["finish-step", *ending, "[DONE]"], types


@pytest.fixture
def server(daphne):
    return daphne(1, SSE_HEARTBEAT_SECONDS="0.5")[0]


def test_live_stream_stored_text_then_chunks_then_finish(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    message = post_chunk(server, alice, conversation.id, "s1", "Hello", index=0)
    post_chunk(server, alice, conversation.id, "s1", ", wor", index=1)
    sse = open_sse(server, path(conversation.id, message["message_id"]), token=token("bob"))
    assert sse.status == 200
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert sse.headers[HEADER] == "v1"
    assert sse.headers["cache-control"] == "no-cache"
    assert sse.headers["x-accel-buffering"] == "no"
    head = ui_parts(sse.until(lambda e: not e.comment and e.data and '"text-delta"' in e.data))
    # The stored text comes first, as one delta.
    assert head[-1]["delta"] == "Hello, wor"
    for i, piece in enumerate(["ld", "!", " bye"], start=2):
        post_chunk(server, alice, conversation.id, "s1", piece, index=i, end=piece == " bye")
    parts = head + ui_parts(sse.rest())
    sse.close()
    assert_shape(parts, message["message_id"], ["finish"])
    stored = Message.objects.get(pk=message["message_id"])
    assert text_of(parts) == stored.content == "Hello, world! bye"
    finish = parts[-2]
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["seq"] == stored.seq
    assert parts[0]["messageMetadata"]["seq"] == stored.seq


def test_ended_stream_is_sent_at_once(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    message = post_chunk(server, alice, conversation.id, "s1", "one ", index=0)
    post_chunk(server, alice, conversation.id, "s1", "two", index=1, end=True)
    sse = open_sse(server, path(conversation.id, message["message_id"]), token=token("bob"))
    parts = ui_parts(sse.rest(timeout=5))
    assert_shape(parts, message["message_id"], ["finish"])
    assert text_of(parts) == "one two"


@pytest.mark.parametrize(
    ("state", "ending"),
    [("stopped", ["abort", "finish"]), ("failed", ["error"]), ("aborted", ["error"])],
)
def test_ended_states_map_to_abort_or_error(server, make_conversation, token, state, ending):
    conversation = make_conversation("alice", ("bob",))
    message = post_chunk(server, token("alice"), conversation.id, "s1", "partial", index=0)
    Message.objects.filter(pk=message["message_id"]).update(stream_state=state)
    sse = open_sse(server, path(conversation.id, message["message_id"]), token=token("bob"))
    parts = ui_parts(sse.rest(timeout=5))
    assert_shape(parts, message["message_id"], ending)
    assert text_of(parts) == "partial"
    if ending == ["error"]:
        assert parts[-2]["errorText"]
    else:
        assert "finishReason" not in parts[-2]
        assert parts[-2]["messageMetadata"]["state"] == "stopped"


def test_live_stream_aborted_by_its_writer_ends_with_error(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    message = post_chunk(server, alice, conversation.id, "s1", "a", index=0)
    sse = open_sse(server, path(conversation.id, message["message_id"]), token=token("bob"))
    head = ui_parts(sse.until(lambda e: '"text-delta"' in e.data))
    post_chunk(server, alice, conversation.id, "s1", "b", index=1)
    post_chunk(server, alice, conversation.id, "s1", "", abort=True)
    parts = head + ui_parts(sse.rest())
    assert_shape(parts, message["message_id"], ["error"])
    assert text_of(parts) == "ab"


def test_live_stream_stopped_without_an_event_is_found_by_the_heartbeat_read(server, make_conversation, token):
    """A final state written without an event (or whose event was lost) still ends the
    stream: the idle heartbeat reads the row again."""
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    message = post_chunk(server, alice, conversation.id, "s1", "x", index=0)
    sse = open_sse(server, path(conversation.id, message["message_id"]), token=token("bob"))
    head = ui_parts(sse.until(lambda e: '"text-delta"' in e.data))
    Message.objects.filter(pk=message["message_id"]).update(stream_state="stopped", content="xyz", stream_chunk_count=1)
    events = sse.rest(timeout=5)
    assert any(e.comment for e in events)  # the heartbeat
    parts = head + ui_parts(events)
    assert_shape(parts, message["message_id"], ["abort", "finish"])
    assert text_of(parts) == "xyz"  # the final content's tail is sent before the end


@pytest.mark.parametrize("coalesce_ms", ["0", "5"])
def test_reader_joining_a_500_chunk_stream_at_a_random_point(daphne, make_conversation, token, coalesce_ms):
    """With coalescing on, one event may carry chunks both below and above the stored count
    the reader started from: the seam still holds (the missing tail is read from the chunk rows)."""
    server = daphne(1, STREAM_COALESCE_MS=coalesce_ms)[0]
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    chunks = [f"<{i}>" for i in range(500)]
    join_after = random.Random().randrange(1, 499)
    joined = threading.Event()
    poster = ChunkPoster(server, alice, conversation.id, "big")
    first = poster.post(chunks[0], 0)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(1, 500):
                if i == join_after:
                    joined.wait(10)
                poster.post(chunks[i], i, end=i == 499)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            poster.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        sse = open_sse(server, path(conversation.id, first["message_id"]), token=token("bob"))
        joined.set()
        parts = ui_parts(sse.rest(timeout=30))
    finally:
        joined.set()
        writer.join(60)
    assert errors == []
    assert_shape(parts, first["message_id"], ["finish"])
    assert text_of(parts) == "".join(chunks) == Message.objects.get(pk=first["message_id"]).content, f"joined after {join_after}"


def test_chunks_whose_events_were_lost_are_read_at_the_heartbeat(server, make_conversation, token):
    """Chunks committed without an event reaching this process (a lost channel-layer
    message) are read from the chunk rows at the next idle heartbeat, in order, once."""
    from streaming.models import StreamChunk

    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    message = post_chunk(server, alice, conversation.id, "s1", "Hello", index=0)
    sse = open_sse(server, path(conversation.id, message["message_id"]), token=token("bob"))
    head = ui_parts(sse.until(lambda e: '"text-delta"' in e.data))
    # Chunks 1 and 2 as the service stores them, with no event.
    StreamChunk.objects.bulk_create([StreamChunk(message_id=message["message_id"], index=1, text=" there"),
                                     StreamChunk(message_id=message["message_id"], index=2, text=",")])
    Message.objects.filter(pk=message["message_id"]).update(content="Hello there,", stream_chunk_count=3)
    filled = ui_parts(sse.until(lambda e: '"text-delta"' in e.data, timeout=5))
    assert text_of(filled) == " there,"
    post_chunk(server, alice, conversation.id, "s1", " bye", index=3, end=True)
    parts = head + filled + ui_parts(sse.rest())
    assert_shape(parts, message["message_id"], ["finish"])
    assert text_of(parts) == "Hello there, bye"


@pytest.mark.redis
def test_reader_on_one_process_writer_on_another(daphne, make_conversation, token):
    a, b = daphne(2)
    conversation = make_conversation("alice", ("bob",))
    poster = ChunkPoster(b, token("alice"), conversation.id, "x")
    first = poster.post("c0 ", 0)
    sse = open_sse(a, path(conversation.id, first["message_id"]), token=token("bob"))
    head = ui_parts(sse.until(lambda e: '"text-delta"' in e.data))
    for i in range(1, 100):
        poster.post(f"c{i} ", i, end=i == 99)
    poster.close()
    parts = head + ui_parts(sse.rest())
    assert_shape(parts, first["message_id"], ["finish"])
    assert text_of(parts) == "".join(f"c{i} " for i in range(100)) == Message.objects.get(pk=first["message_id"]).content


def test_usage_known_only_at_the_end_rides_on_finish(server, make_conversation, token):
    conversation = make_conversation("alice", ("bob",))
    alice = token("alice")
    message = post_chunk(server, alice, conversation.id, "s1", "a", index=0)
    Message.objects.filter(pk=message["message_id"]).update(metadata={"run_id": "r1"})
    sse = open_sse(server, path(conversation.id, message["message_id"]), token=token("bob"))
    head = ui_parts(sse.until(lambda e: '"text-delta"' in e.data))
    assert head[0]["messageMetadata"]["run_id"] == "r1" and "usage" not in head[0]["messageMetadata"]
    Message.objects.filter(pk=message["message_id"]).update(
        metadata={"run_id": "r1", "usage": {"input_tokens": 5, "output_tokens": 1}}, stream_state="completed")
    parts = head + ui_parts(sse.rest(timeout=5))  # found by the heartbeat's read
    assert parts[-2]["type"] == "finish"
    assert parts[-2]["messageMetadata"]["usage"] == {"input_tokens": 5, "output_tokens": 1}
    assert parts[-2]["messageMetadata"]["run_id"] == "r1"
