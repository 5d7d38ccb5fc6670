import asyncio
import importlib
import random
from datetime import timedelta

import orjson
import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from aiim_project.core.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from messaging import selectors as messaging_selectors
from messaging.models import Conversation, Member, Message
from streaming import services
from streaming.gapfill import chunk_gap_loader, load_chunks
from streaming.models import StreamChunk

pytestmark = pytest.mark.django_db

# On PostgreSQL the UPDATE and the chunk rows' INSERT are one statement.
WRITE_FOLDED = 1 if connection.vendor == "postgresql" else 0
# A start: the locking statement, then the message stored with its first chunk and its seq
# (one statement on PostgreSQL; the INSERT, the `last_seq` UPDATE and the chunk's INSERT on
# SQLite), inside a SAVEPOINT/RELEASE pair in the test's transaction.
START_QUERIES = 4 if connection.vendor == "postgresql" else 6


def append(conv, chunk, sender="alice", cmid="s1", tenant="default", **kw):
    return services.stream_append(
        tenant=tenant, sender=sender, conversation_id=conv.id, client_msg_id=cmid, chunk=chunk, **kw
    )


def row(cmid="s1", sender="alice"):
    return Message.objects.get(client_msg_id=cmid, sender_id=sender)


def test_first_chunk_starts_one_ai_message_with_a_seq(make_conversation, send):
    conv = make_conversation()
    send(conv, content="before")
    result = append(conv, "Hel")
    assert result.started and result.applied and result.chunk_index == 0
    m = row()
    assert (m.seq, m.type, m.content, m.stream_state, m.stream_chunk_count) == (2, "ai", "Hel", "streaming", 1)
    assert list(StreamChunk.objects.values_list("index", "text")) == [(0, "Hel")]
    assert Conversation.objects.get(pk=conv.pk).last_seq == 2


def test_chunks_append_in_order_and_end_completes(make_conversation):
    conv = make_conversation()
    parts = ["Hel", "lo, ", "", "wor", "ld  "]
    for i, part in enumerate(parts):
        result = append(conv, part, stream_end=i == len(parts) - 1)
        assert (result.chunk_index, result.started) == (i, i == 0)
    m = row()
    assert (m.content, m.stream_chunk_count, m.stream_state) == ("Hello, world  ", 5, "completed")
    assert result.stream_end
    assert Message.objects.count() == 1


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's TOAST compression")
def test_a_long_streams_text_is_stored_compressed_with_lz4(make_conversation):
    """Every chunk rewrites the whole text; a text over ~2 KB is compressed on each rewrite,
    with lz4 (migration messaging/0007) where the server has it: pglz's cost grew with the
    reply (docs/streaming.md)."""
    if not importlib.import_module("messaging.migrations.0007_message_content_lz4").lz4_available(connection):
        pytest.skip("this PostgreSQL was built without lz4")
    conv = make_conversation()
    words = [f"word {k} of a long reply, " for k in range(400)]
    for word in words:
        append(conv, word)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_column_compression(content) FROM messaging_message WHERE id = %s", [row().id])
        assert cursor.fetchone()[0] == "lz4"
    assert row().content == "".join(words)


def test_repeated_index_is_acked_again_and_not_applied(make_conversation):
    conv = make_conversation()
    append(conv, "a", chunk_index=0)
    append(conv, "b", chunk_index=1)
    again = append(conv, "b", chunk_index=1)
    assert (again.applied, again.chunk_index, again.started) == (False, 1, False)
    first_again = append(conv, "a", chunk_index=0)
    assert (first_again.applied, first_again.started) == (False, False)
    assert (row().content, row().stream_chunk_count) == ("ab", 2)
    append(conv, "c", chunk_index=2, stream_end=True)
    retry_of_last = append(conv, "c", chunk_index=2, stream_end=True)
    assert (retry_of_last.applied, retry_of_last.stream_end) == (False, True)
    assert row().content == "abc"


def test_index_ahead_is_a_conflict_naming_the_expected_one(make_conversation):
    conv = make_conversation()
    with pytest.raises(Conflict) as exc:
        append(conv, "x", chunk_index=3)
    assert exc.value.extra["expected_chunk_index"] == 0
    assert not Message.objects.exists()
    assert Conversation.objects.get(pk=conv.pk).last_seq == 0  # no seq consumed
    append(conv, "a")
    with pytest.raises(Conflict) as exc:
        append(conv, "x", chunk_index=2)
    assert exc.value.extra["expected_chunk_index"] == 1
    assert (row().content, row().stream_chunk_count) == ("a", 1)


@pytest.mark.parametrize("end", ["complete", "abort"])
def test_chunk_or_abort_for_an_ended_stream_is_a_conflict(make_conversation, end):
    conv = make_conversation()
    append(conv, "a")
    if end == "complete":
        append(conv, "b", stream_end=True)
    else:
        services.stream_abort(tenant="default", sender="alice", conversation_id=conv.id, client_msg_id="s1")
    with pytest.raises(Conflict):
        append(conv, "c")
    with pytest.raises(Conflict):
        append(conv, "c", chunk_index=row().stream_chunk_count)
    with pytest.raises(Conflict):
        services.stream_abort(tenant="default", sender="alice", conversation_id=conv.id, client_msg_id="s1")
    assert row().content == ("ab" if end == "complete" else "a")


def test_abort_keeps_the_text_that_arrived(make_conversation):
    conv = make_conversation()
    append(conv, "partial ")
    append(conv, "answer")
    message = services.stream_abort(tenant="default", sender="alice", conversation_id=conv.id, client_msg_id="s1")
    assert (message.stream_state, message.content) == ("aborted", "partial answer")
    assert (row().stream_state, row().content, row().stream_chunk_count) == ("aborted", "partial answer", 2)


def test_abort_of_an_unknown_stream_is_not_found(make_conversation):
    conv = make_conversation()
    with pytest.raises(NotFound):
        services.stream_abort(tenant="default", sender="alice", conversation_id=conv.id, client_msg_id="nope")


def test_only_the_sender_writes_to_a_stream(make_conversation):
    conv = make_conversation(others=("bob",))
    append(conv, "mine")
    with pytest.raises(Forbidden):
        append(conv, "hijack", sender="bob")
    with pytest.raises(Forbidden):
        services.stream_abort(tenant="default", sender="bob", conversation_id=conv.id, client_msg_id="s1")
    assert (row().content, row().stream_state, Message.objects.count()) == ("mine", "streaming", 1)


def test_a_non_member_cannot_start_or_continue_a_stream(make_conversation):
    conv = make_conversation(others=("bob",))
    with pytest.raises(Forbidden):
        append(conv, "x", sender="mallory")
    append(conv, "a")
    with pytest.raises(Forbidden):
        append(conv, "x", sender="mallory")
    with pytest.raises(Forbidden):
        services.stream_abort(tenant="default", sender="mallory", conversation_id=conv.id, client_msg_id="s1")
    assert row().content == "a"


def test_a_removed_member_cannot_continue_their_stream(make_conversation):
    from messaging.services import member_remove

    conv = make_conversation(others=("bob",))
    append(conv, "a", sender="bob")
    member_remove(tenant="default", actor="alice", conversation_id=conv.id, user_id="bob")
    with pytest.raises(Forbidden):
        append(conv, "b", sender="bob")
    assert row(sender="bob").content == "a"


def test_another_tenants_conversation_is_exactly_a_missing_one(make_conversation):
    theirs = make_conversation(tenant="acme", creator="alice", others=("bob",))
    services.stream_append(tenant="acme", sender="alice", conversation_id=theirs.id, client_msg_id="s1", chunk="a")
    outcomes = []
    for conversation_id in (theirs.id, "does-not-exist"):
        with pytest.raises(NotFound) as chunk_exc:
            services.stream_append(tenant="default", sender="alice", conversation_id=conversation_id, client_msg_id="s1", chunk="x")
        with pytest.raises(NotFound) as abort_exc:
            services.stream_abort(tenant="default", sender="alice", conversation_id=conversation_id, client_msg_id="s1")
        outcomes.append((chunk_exc.value.detail, abort_exc.value.detail))
    assert outcomes[0] == outcomes[1]
    assert Message.objects.get().content == "a"


@pytest.mark.parametrize(
    "kw, error",
    [
        ({"client_msg_id": None}, Invalid),
        ({"client_msg_id": ""}, Invalid),
        ({"chunk": 42}, Invalid),
        ({"chunk": None}, Invalid),
        ({"chunk": ["a"]}, Invalid),
        ({"chunk": "nul\x00"}, Invalid),
        ({"chunk_index": -1}, Invalid),
        ({"chunk_index": True}, Invalid),
        ({"chunk_index": "1"}, Invalid),
        ({"stream_end": "yes"}, Invalid),
        ({"conversation_id": 7}, Invalid),
        ({"conversation_id": "c\x00"}, Invalid),
        ({"client_msg_id": "s\x00"}, Invalid),
    ],
)
def test_bad_input_is_refused_and_the_stream_is_unharmed(make_conversation, kw, error):
    conv = make_conversation()
    append(conv, "ok")
    args = {"tenant": "default", "sender": "alice", "conversation_id": conv.id, "client_msg_id": "s1", "chunk": "bad"}
    with pytest.raises(error):
        services.stream_append(**{**args, **kw})
    assert (row().content, row().stream_chunk_count, row().stream_state) == ("ok", 1, "streaming")
    assert StreamChunk.objects.count() == 1


def test_the_size_limit_bounds_the_whole_text(make_conversation, settings):
    settings.MAX_MESSAGE_BYTES = 100
    conv = make_conversation()
    with pytest.raises(TooLarge):
        append(conv, "x" * 200)
    assert not Message.objects.exists()
    append(conv, "x" * 60)
    with pytest.raises(TooLarge):
        append(conv, "y" * 60)
    assert (row().content, row().stream_chunk_count) == ("x" * 60, 1)
    append(conv, "y" * 30, stream_end=True)
    assert row().content == "x" * 60 + "y" * 30


def test_client_msg_id_of_an_ordinary_message_is_not_a_stream(make_conversation, send):
    conv = make_conversation()
    send(conv, content="plain", client_msg_id="s1")
    with pytest.raises(Conflict):
        append(conv, "x")
    assert row().content == "plain"


def test_a_stream_interleaved_with_messages_keeps_seq_order_and_counts_once(make_conversation, send):
    conv = make_conversation(others=("bob",))
    send(conv, content="q1")
    append(conv, "an")
    send(conv, sender="bob", content="q2")
    append(conv, "swer")
    send(conv, content="q3")
    append(conv, "!", stream_end=True)
    page = messaging_selectors.messages_page(tenant="default", user_id="bob", conversation_id=conv.id)
    assert [(m.seq, m.content) for m in page.messages] == [(1, "q1"), (2, "answer!"), (3, "q2"), (4, "q3")]
    views, _ = messaging_selectors.conversation_list(tenant="default", user_id="bob")
    assert views[0].unread_count == 3  # q1, the stream and q3: the stream is one message


def test_two_streams_in_one_conversation_stay_separate(make_conversation):
    conv = make_conversation(others=("bot",))
    for i in range(5):
        append(conv, f"a{i}", cmid="A")
        append(conv, f"b{i}", cmid="B", sender="bot")
        append(conv, f"c{i}", cmid="C")
    assert row("A").content == "a0a1a2a3a4"
    assert row("B", "bot").content == "b0b1b2b3b4"
    assert row("C").content == "c0c1c2c3c4"
    assert sorted(Message.objects.values_list("seq", flat=True)) == [1, 2, 3]


def test_one_chunk_costs_one_read_and_two_writes(make_conversation, django_assert_num_queries):
    conv = make_conversation()
    append(conv, "a")
    # SELECT the stream (with membership), conditional UPDATE, INSERT the chunk row (one
    # statement on PostgreSQL); the service's transaction is a SAVEPOINT/RELEASE pair inside
    # the test's transaction.
    with django_assert_num_queries(5 - WRITE_FOLDED):
        append(conv, "b")


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_apply_every_chunk_exactly_once(make_conversation, in_threads):
    conv = make_conversation()
    append(conv, "start;")

    def writer(n):
        for i in range(10):
            append(conv, f"{n}.{i};")

    in_threads(writer, 4)
    m = row()
    chunks = list(StreamChunk.objects.filter(message=m).order_by("index").values_list("text", flat=True))
    assert m.stream_chunk_count == 41 == len(chunks)
    assert m.content == "".join(chunks)
    assert sorted(chunks[1:]) == sorted(f"{n}.{i};" for n in range(4) for i in range(10))
    for n in range(4):  # one writer's chunks keep their order
        mine = [c for c in chunks if c.startswith(f"{n}.")]
        assert mine == [f"{n}.{i};" for i in range(10)]


def test_reaper_aborts_only_idle_streams_keeping_their_text(make_conversation, settings):
    settings.STREAM_IDLE_TIMEOUT = 60
    conv = make_conversation()
    append(conv, "old", cmid="idle")
    append(conv, "new", cmid="busy")
    append(conv, "done", cmid="ended", stream_end=True)
    long_ago = timezone.now() - timedelta(seconds=120)
    Message.objects.filter(client_msg_id__in=["idle", "ended"]).update(stream_updated_at=long_ago)
    reaped = services.streams_reap()
    assert [m.client_msg_id for m in reaped] == ["idle"]
    assert (row("idle").stream_state, row("idle").content) == ("aborted", "old")
    assert row("busy").stream_state == "streaming"
    assert row("ended").stream_state == "completed"
    with pytest.raises(Conflict):
        append(conv, "late", cmid="idle")
    assert services.streams_reap() == []
    later = services.streams_reap(now=timezone.now() + timedelta(seconds=61))
    assert [m.client_msg_id for m in later] == ["busy"]


def test_abort_stale_streams_command(make_conversation, settings, capsys):
    settings.STREAM_IDLE_TIMEOUT = 60
    conv = make_conversation()
    append(conv, "old")
    Message.objects.update(stream_updated_at=timezone.now() - timedelta(seconds=61))
    call_command("abort_stale_streams")
    assert "aborted 1 stale stream(s)" in capsys.readouterr().out
    assert row().stream_state == "aborted"


def test_gap_loader_returns_exactly_the_missing_chunks(make_conversation):
    conv = make_conversation()
    parts = [f"p{i} " for i in range(6)]
    for part in parts[:4]:
        append(conv, part)
    m = row()
    filled = load_chunks(m.id, 2)
    assert (filled["chunk_index"], filled["last_chunk_index"]) == (2, 3)
    import orjson

    data = orjson.loads(filled["frame"])["data"]
    assert data["event"] == "message.stream_chunk"
    assert (data["delta"], data["chunk"], data["stream_end"], data["seq"], data["stream_id"]) == ("p2 p3 ", "p2 p3 ", False, m.seq, "s1")
    assert load_chunks(m.id, 4) is None
    append(conv, parts[4])
    append(conv, parts[5], stream_end=True)
    data = orjson.loads(load_chunks(m.id, 5)["frame"])["data"]
    assert (data["delta"], data["stream_end"], data["chunk_index"], data["last_chunk_index"]) == ("p5 ", True, 5, 5)
    assert orjson.loads(load_chunks(m.id, 0)["frame"])["data"]["delta"] == "".join(parts)


def test_the_wiring_hands_the_gap_loader_to_the_gateway():
    from aiim_project import wiring

    assert wiring.gateway().consumer_initkwargs["load_chunks"] is chunk_gap_loader


# --- events on the real channel layer --------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_events_created_before_the_first_chunk_then_every_chunk_then_updated(make_conversation, listen):
    conv = await database_sync_to_async(make_conversation)()
    listener = await listen(conv.id)
    call = database_sync_to_async(services.stream_append)
    ids = {"tenant": "default", "sender": "alice", "conversation_id": conv.id, "client_msg_id": "s1"}
    await call(**ids, chunk="Hel")
    await call(**ids, chunk="lo")
    await call(**ids, chunk="lo", chunk_index=1)  # a repeat publishes nothing
    await call(**ids, chunk="!", stream_end=True)
    got = await listener.until(lambda e: e["event"] == "message.updated")
    assert [e["event"] for e in got] == ["message.created"] + ["message.stream_chunk"] * 3 + ["message.updated"]
    created = got[0]["data"]["message"]
    assert (created["content"], created["stream"]) == ("", {"stream_id": "s1", "state": "streaming", "chunk_count": 0})
    assert created["type"] == "ai"
    assert got[0]["stream"]["chunk_count"] == 0  # the route field the gateway follows
    for index, (event, delta) in enumerate(zip(got[1:4], ["Hel", "lo", "!"])):
        assert {k: event[k] for k in ("seq", "message_id", "chunk_index", "last_chunk_index")} == {
            "seq": created["seq"],
            "message_id": created["message_id"],
            "chunk_index": index,
            "last_chunk_index": index,
        }
        data = event["data"]
        assert (data["delta"], data["chunk"], data["chunk_index"], data["last_chunk_index"]) == (delta, delta, index, index)
        assert (data["stream_id"], data["seq"], data["message_id"]) == ("s1", created["seq"], created["message_id"])
        assert data["stream_end"] == (index == 2)
    final = got[4]
    assert (final["seq"], final["message_id"], final["stream_state"]) == (created["seq"], created["message_id"], "completed")
    assert final["data"]["message"]["content"] == "Hello!"
    assert final["data"]["message"]["stream"] == {"stream_id": "s1", "state": "completed", "chunk_count": 3}


@pytest.mark.django_db(transaction=True)
async def test_a_stream_that_starts_and_ends_in_one_chunk_is_announced_as_any_other(make_conversation, listen):
    # The message is stored with its first chunk in one statement; the events still tell
    # the story in order: created empty, the chunk, then the final message.
    conv = await database_sync_to_async(make_conversation)()
    listener = await listen(conv.id)
    ids = {"tenant": "default", "sender": "alice", "conversation_id": conv.id, "client_msg_id": "s1"}
    await database_sync_to_async(services.stream_append)(**ids, chunk="Whole.", stream_end=True)
    got = await listener.until(lambda e: e["event"] == "message.updated")
    assert [e["event"] for e in got] == ["message.created", "message.stream_chunk", "message.updated"]
    created = got[0]["data"]["message"]
    assert (created["content"], created["stream"]) == ("", {"stream_id": "s1", "state": "streaming", "chunk_count": 0})
    assert (got[1]["data"]["delta"], got[1]["data"]["stream_end"]) == ("Whole.", True)
    assert got[2]["data"]["message"]["stream"] == {"stream_id": "s1", "state": "completed", "chunk_count": 1}
    stored = await database_sync_to_async(Message.objects.get)(pk=created["message_id"])
    assert (stored.content, stored.stream_state, stored.stream_chunk_count) == ("Whole.", "completed", 1)
    chunks = await database_sync_to_async(lambda: list(StreamChunk.objects.filter(message=stored).values_list("index", "text")))()
    assert chunks == [(0, "Whole.")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["abort", "reaper"])
async def test_abort_and_reaper_emit_updated_with_the_final_message(make_conversation, listen, how, settings):
    settings.STREAM_IDLE_TIMEOUT = 60
    conv = await database_sync_to_async(make_conversation)()
    ids = {"tenant": "default", "sender": "alice", "conversation_id": conv.id, "client_msg_id": "s1"}
    await database_sync_to_async(services.stream_append)(**ids, chunk="kept")
    listener = await listen(conv.id)
    if how == "abort":
        await database_sync_to_async(services.stream_abort)(**ids)
    else:
        await database_sync_to_async(services.streams_reap)(now=timezone.now() + timedelta(seconds=61))
    # The append's own events are published fire-and-forget and may reach the listener first.
    event = (await listener.until(lambda e: e["event"] == "message.updated"))[-1]
    assert (event["event"], event["stream_state"]) == ("message.updated", "aborted")
    assert event["data"]["message"]["content"] == "kept"
    assert event["data"]["message"]["stream"]["state"] == "aborted"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["end", "abort"])
async def test_final_update_carries_the_status_the_sender_sees_now(make_conversation, listen, how):
    conv = await database_sync_to_async(make_conversation)("alice", ("bob", "carol"))
    ids = {"tenant": "default", "sender": "alice", "conversation_id": conv.id, "client_msg_id": "s1"}
    await database_sync_to_async(services.stream_append)(**ids, chunk="kept")
    # Both others saw the stream while it was written: bob read it, carol got it.
    await Member.objects.filter(conversation=conv, user_id="bob").aupdate(read_seq=1, delivered_seq=1)
    await Member.objects.filter(conversation=conv, user_id="carol").aupdate(delivered_seq=1)
    listener = await listen(conv.id)
    if how == "end":
        await database_sync_to_async(services.stream_append)(**ids, chunk="!", stream_end=True)
    else:
        await database_sync_to_async(services.stream_abort)(**ids)
    got = await listener.until(lambda e: e["event"] == "message.updated")
    assert got[-1]["data"]["message"]["status"] == "delivered"


@pytest.mark.django_db(transaction=True)
async def test_reaper_renders_each_streams_status_from_one_members_query(make_conversation, listen, settings):
    settings.STREAM_IDLE_TIMEOUT = 60
    make = database_sync_to_async(make_conversation)
    conversations = [await make("alice", (other,)) for other in ("bob", "carol", "dave")]
    for conv in conversations:
        await database_sync_to_async(append)(conv, "kept", cmid=f"s-{conv.id}")
    await Member.objects.filter(user_id="carol").aupdate(read_seq=1, delivered_seq=1)
    await Member.objects.filter(user_id="dave").aupdate(delivered_seq=1)
    listeners = [await listen(conv.id) for conv in conversations]

    def reap():
        with CaptureQueriesContext(connection) as queries:
            reaped = services.streams_reap(now=timezone.now() + timedelta(seconds=61))
        return reaped, [q["sql"] for q in queries.captured_queries]

    reaped, sql = await database_sync_to_async(reap)()
    assert len(reaped) == 3
    assert sum(Member._meta.db_table in q for q in sql) == 1
    statuses = [(await listener.next())["data"]["message"]["status"] for listener in listeners]
    assert statuses == ["sent", "read", "delivered"]


@pytest.mark.django_db(transaction=True)
async def test_late_joiner_reconstructs_the_text_from_history_and_live_chunks(make_conversation, listen):
    """Join at a random point of a 500-chunk stream: REST-style history (text so far +
    chunk_count) followed by the live chunk events from that count gives the final text."""
    conv = await database_sync_to_async(make_conversation)()
    ids = {"tenant": "default", "sender": "alice", "conversation_id": conv.id, "client_msg_id": "s1"}
    rng = random.Random(4)
    parts = [rng.choice(["tok", " ", "é", "\n", "好", "x" * rng.randint(1, 5)]) for _ in range(500)]
    join_at = rng.randint(1, 498)

    def write(start, stop):
        for i in range(start, stop):
            services.stream_append(**ids, chunk=parts[i], stream_end=i == len(parts) - 1)

    await database_sync_to_async(write)(0, join_at)
    listener = await listen(conv.id)  # join first, then read: nothing falls in between
    page = await database_sync_to_async(messaging_selectors.messages_page)(
        tenant="default", user_id="bob", conversation_id=conv.id
    )
    snapshot = page.messages[0]
    text, next_chunk = snapshot.content, snapshot.stream_chunk_count
    assert next_chunk >= join_at
    await database_sync_to_async(write)(join_at, len(parts))
    for event in await listener.until(lambda e: e["event"] == "message.updated"):
        if event["event"] == "message.stream_chunk" and event["last_chunk_index"] >= next_chunk:
            assert event["chunk_index"] == next_chunk
            text += event["data"]["delta"]
            next_chunk = event["last_chunk_index"] + 1
    assert text == "".join(parts)
    assert next_chunk == 500


# --- coalescing -------------------------------------------------------------------------


def contiguous_text(chunk_events, next_chunk=0):
    text = ""
    for event in chunk_events:
        data = event["data"]
        assert event["chunk_index"] == data["chunk_index"] == next_chunk
        assert event["last_chunk_index"] == data["last_chunk_index"] >= next_chunk
        assert data["delta"] == data["chunk"]
        text += data["delta"]
        next_chunk = event["last_chunk_index"] + 1
    return text, next_chunk


@pytest.mark.django_db(transaction=True)
async def test_coalescing_merges_close_chunks_into_exact_ranges_and_ends_with_the_final_chunk(make_conversation, listen, settings):
    settings.STREAM_COALESCE_MS = 200
    conv = await database_sync_to_async(make_conversation)()
    listener = await listen(conv.id)
    ids = {"tenant": "default", "sender": "alice", "conversation_id": conv.id, "client_msg_id": "s1"}
    parts = [f"w{i} " for i in range(12)]
    for i, part in enumerate(parts):
        result = await database_sync_to_async(services.stream_append)(**ids, chunk=part, stream_end=i == len(parts) - 1)
        assert result.chunk_index == i  # every chunk is still stored and acked on its own
    got = await listener.until(lambda e: e["event"] == "message.updated")
    assert got[0]["event"] == "message.created"
    chunk_events = [e for e in got if e["event"] == "message.stream_chunk"]
    assert len(chunk_events) < len(parts)
    assert contiguous_text(chunk_events) == ("".join(parts), len(parts))
    assert got[-2]["event"] == "message.stream_chunk" and got[-2]["data"]["stream_end"] is True
    assert got[-1]["data"]["message"]["content"] == "".join(parts)


@pytest.mark.django_db(transaction=True)
async def test_abort_publishes_the_pending_chunks_before_the_final_message(make_conversation, listen, settings):
    settings.STREAM_COALESCE_MS = 5000  # far longer than the test: only the abort can flush
    conv = await database_sync_to_async(make_conversation)()
    listener = await listen(conv.id)
    ids = {"tenant": "default", "sender": "alice", "conversation_id": conv.id, "client_msg_id": "s1"}
    for part in ("a", "b", "c"):
        await database_sync_to_async(services.stream_append)(**ids, chunk=part)
    await database_sync_to_async(services.stream_abort)(**ids)
    got = await listener.until(lambda e: e["event"] == "message.updated", timeout=2)
    assert [e["event"] for e in got] == ["message.created", "message.stream_chunk", "message.updated"]
    assert (got[1]["chunk_index"], got[1]["last_chunk_index"], got[1]["data"]["delta"]) == (0, 2, "abc")
    assert got[2]["data"]["message"]["stream"]["state"] == "aborted"


# --- runs: several queued chunks of one stream in one transaction ------------------------


def run(conv, items, sender="alice", cmid="s1", tenant="default"):
    return services.stream_append_run(
        tenant=tenant, sender=sender, conversation_id=conv.id, client_msg_id=cmid,
        chunks=[services.ChunkInput(**item) for item in items],
    )


def outcome(result_or_exc):
    if isinstance(result_or_exc, Exception):
        return (type(result_or_exc).__name__, result_or_exc.detail, result_or_exc.extra)
    return (result_or_exc.chunk_index, result_or_exc.applied, result_or_exc.stream_end)


def one_at_a_time(conv, items, cmid):
    got = []
    for item in items:
        try:
            got.append(outcome(append(conv, cmid=cmid, **item)))
        except (Conflict, Invalid, TooLarge, Forbidden, NotFound) as exc:
            got.append(outcome(exc))
    return got


def in_runs(conv, items, cmid):
    """What the gateway does with a run: the batch's prefix, then the first frame it left
    through stream_append alone, then the rest as a run again."""
    got = []
    while items:
        results = run(conv, items, cmid=cmid)
        got += [outcome(r) for r in results]
        items = items[len(results):]
        if items:
            got += one_at_a_time(conv, items[:1], cmid)
            items = items[1:]
    return got


def stream_state(cmid):
    m = row(cmid)
    chunks = list(StreamChunk.objects.filter(message=m).order_by("index").values_list("index", "text"))
    return m.content, m.stream_chunk_count, m.stream_state, chunks


def test_a_run_is_stored_in_one_go_with_a_result_per_chunk(make_conversation):
    conv = make_conversation()
    append(conv, "a")
    results = run(conv, [
        {"chunk": "b", "chunk_index": 1},
        {"chunk": "c"},
        {"chunk": "a", "chunk_index": 0},  # a repeat: acked again, not applied
        {"chunk": "d", "chunk_index": 3, "stream_end": True},
        {"chunk": "d", "chunk_index": 3, "stream_end": True},  # a retry of the last one
    ])
    assert [outcome(r) for r in results] == [(1, True, False), (2, True, False), (0, False, False), (3, True, True), (3, False, True)]
    assert all(not r.started and r.message.pk == row().pk for r in results)
    assert stream_state("s1") == ("abcd", 4, "completed", [(0, "a"), (1, "b"), (2, "c"), (3, "d")])


def test_a_refused_chunk_ends_the_run_and_the_chunks_before_it_are_stored(make_conversation):
    conv = make_conversation()
    append(conv, "a")
    items = [{"chunk": "b"}, {"chunk": "c"}, {"chunk": "x", "chunk_index": 9}, {"chunk": "d"}]
    results = run(conv, items)
    assert [outcome(r) for r in results] == [(1, True, False), (2, True, False)]
    assert stream_state("s1") == ("abc", 3, "streaming", [(0, "a"), (1, "b"), (2, "c")])
    # The refused chunk then gets exactly its usual answer; the one after it still applies.
    with pytest.raises(Conflict) as exc:
        append(conv, **items[2])
    assert exc.value.extra == {"expected_chunk_index": 3}
    assert [outcome(r) for r in run(conv, items[3:])] == [(3, True, False)]


def test_runs_answer_every_chunk_exactly_as_one_chunk_at_a_time(make_conversation, settings):
    """Random runs (repeats, gaps, bad input, oversize, ends, chunks after the end): applied
    as the gateway applies them, every chunk gets the answer it gets alone, and the stream
    ends in the same state."""
    settings.MAX_MESSAGE_BYTES = 120
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    conv = make_conversation()
    for trial in range(30):
        a, b = f"a{trial}", f"b{trial}"
        append(conv, "start", cmid=a)
        append(conv, "start", cmid=b)
        items, nxt = [], 1
        for _ in range(rng.randint(2, 14)):
            kind = rng.random()
            item = {"chunk": rng.choice(["x", "yy", "", "é好"])}
            if kind < 0.5:
                item["chunk_index"] = nxt
                nxt += 1
            elif kind < 0.6:
                nxt += 1  # chunk_index omitted: the next one
            elif kind < 0.7:
                item["chunk_index"] = rng.randint(0, nxt + 2)  # a repeat, or ahead
            elif kind < 0.78:
                item["chunk"] = rng.choice([7, None, "nul\x00"])
            elif kind < 0.84:
                item["chunk"] = "z" * rng.randint(20, 60)
            elif kind < 0.9:
                item["stream_end"] = True
            else:
                item["chunk_index"], item["stream_end"] = True, "yes"
            items.append(item)
        expected = one_at_a_time(conv, items, a)
        assert in_runs(conv, items, b) == expected, (seed, trial, items)
        assert stream_state(b)[:3] == stream_state(a)[:3], (seed, trial, items)
        assert [c[1] for c in stream_state(b)[3]] == [c[1] for c in stream_state(a)[3]]


def test_a_run_leaves_starting_and_refusing_to_the_one_chunk_path(make_conversation, send):
    """Nothing is written and nothing answered for a stream that does not exist (yet), is
    another tenant's, another sender's, the caller's ordinary message, or in a conversation
    the caller has left: stream_append then gives each its usual answer."""
    from messaging.services import member_remove

    conv = make_conversation(others=("bob", "carol"))
    theirs = make_conversation(tenant="acme", creator="alice")
    services.stream_append(tenant="acme", sender="alice", conversation_id=theirs.id, client_msg_id="s1", chunk="t")
    append(conv, "a", sender="bob", cmid="bobs")
    append(conv, "a", sender="carol", cmid="carols")
    member_remove(tenant="default", actor="alice", conversation_id=conv.id, user_id="carol")
    send(conv, content="plain", client_msg_id="plain")
    chunks = [{"chunk": "x", "chunk_index": 1}, {"chunk": "y", "chunk_index": 2}]
    before = list(Message.objects.order_by("pk").values_list("pk", "content", "stream_chunk_count"))
    assert run(conv, chunks, cmid="new") == []
    assert services.stream_append_run(
        tenant="default", sender="alice", conversation_id=theirs.id, client_msg_id="s1",
        chunks=[services.ChunkInput(**c) for c in chunks],
    ) == []
    assert run(conv, chunks, sender="alice", cmid="bobs") == []
    assert run(conv, chunks, sender="carol", cmid="carols") == []
    assert run(conv, chunks, cmid="plain") == []
    assert list(Message.objects.order_by("pk").values_list("pk", "content", "stream_chunk_count")) == before
    assert StreamChunk.objects.count() == 3
    with pytest.raises(NotFound) as theirs_exc:
        services.stream_append(tenant="default", sender="alice", conversation_id=theirs.id, client_msg_id="s1", chunk="x")
    with pytest.raises(NotFound) as missing_exc:
        services.stream_append(tenant="default", sender="alice", conversation_id="missing", client_msg_id="s1", chunk="x")
    assert theirs_exc.value.detail == missing_exc.value.detail
    with pytest.raises(Conflict):
        append(conv, "x", cmid="new", chunk_index=1)
    with pytest.raises(Forbidden):
        append(conv, "x", cmid="bobs", chunk_index=1)
    with pytest.raises(Forbidden):
        append(conv, "x", sender="carol", cmid="carols", chunk_index=1)
    with pytest.raises(Conflict):
        append(conv, "x", cmid="plain", chunk_index=1)


@pytest.mark.parametrize("length", [2, 40])
def test_a_run_costs_the_queries_of_one_chunk_whatever_its_length(make_conversation, django_assert_num_queries, length):
    conv = make_conversation()
    append(conv, "a")
    # SAVEPOINT, SELECT the stream, conditional UPDATE, one INSERT of every chunk row, RELEASE.
    with django_assert_num_queries(5 - WRITE_FOLDED):
        results = run(conv, [{"chunk": f"{i};"} for i in range(length)])
    assert len(results) == length
    # Ending the stream adds the members read for the final message, as for one chunk.
    with django_assert_num_queries(6 - WRITE_FOLDED):
        run(conv, [{"chunk": "."}, {"chunk": "", "stream_end": True}])
    assert row().stream_chunk_count == length + 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_apply_every_chunk_exactly_once(make_conversation, in_threads):
    conv = make_conversation()
    append(conv, "start;")

    def writer(n):
        for i in range(0, 12, 3):
            items = [{"chunk": f"{n}.{j};"} for j in range(i, i + 3)]
            while items:  # as the gateway does: the rest of a run goes one at a time
                items = items[len(run(conv, items)):]
                if items:
                    append(conv, **items.pop(0))

    in_threads(writer, 4)
    m = row()
    chunks = list(StreamChunk.objects.filter(message=m).order_by("index").values_list("text", flat=True))
    assert m.stream_chunk_count == 49 == len(chunks)
    assert m.content == "".join(chunks)
    for n in range(4):
        assert [c for c in chunks if c.startswith(f"{n}.")] == [f"{n}.{j};" for j in range(12)]


@pytest.mark.django_db(transaction=True)
async def test_a_run_publishes_one_event_for_its_chunks_after_commit(make_conversation, listen):
    conv = await database_sync_to_async(make_conversation)()
    listener = await listen(conv.id)
    await database_sync_to_async(append)(conv, "Hel")
    created, first = await listener.next(), await listener.next()
    assert (created["event"], first["chunk_index"], first["last_chunk_index"]) == ("message.created", 0, 0)

    def rolled_back():
        from django.db import transaction

        with pytest.raises(RuntimeError), transaction.atomic():
            run(conv, [{"chunk": "NO"}, {"chunk": "PE"}])
            raise RuntimeError

    await database_sync_to_async(rolled_back)()
    assert (await database_sync_to_async(row)()).content == "Hel"
    results = await database_sync_to_async(run)(conv, [{"chunk": "lo"}, {"chunk": "lo", "chunk_index": 1}, {"chunk": ", "}, {"chunk": "you"}])
    assert [r.chunk_index for r in results] == [1, 1, 2, 3]
    event = await listener.next()  # not the rolled-back run: nothing was published for it
    assert event["event"] == "message.stream_chunk"
    assert (event["chunk_index"], event["last_chunk_index"], event["seq"]) == (1, 3, created["seq"])
    assert (event["data"]["delta"], event["data"]["chunk"], event["data"]["stream_end"]) == ("lo, you", "lo, you", False)
    await database_sync_to_async(run)(conv, [{"chunk": "!"}, {"chunk": "", "stream_end": True}])
    last, final = await listener.next(), await listener.next()
    assert (last["chunk_index"], last["last_chunk_index"], last["data"]["delta"], last["data"]["stream_end"]) == (4, 5, "!", True)
    assert (final["event"], final["data"]["message"]["content"]) == ("message.updated", "Hello, you!")
    assert final["data"]["message"]["stream"] == {"stream_id": "s1", "state": "completed", "chunk_count": 6}
    with pytest.raises(asyncio.TimeoutError):
        await listener.next(timeout=0.3)


@pytest.mark.django_db(transaction=True)
async def test_late_joiner_reconstructs_the_text_of_a_stream_written_in_runs(make_conversation, listen):
    conv = await database_sync_to_async(make_conversation)()
    rng = random.Random()
    parts = [rng.choice(["tok", " ", "é", "\n", "好", "x" * rng.randint(1, 5)]) for _ in range(300)]
    join_at = rng.randint(1, 290)

    def write(start, stop):
        i = start
        while i < stop:
            n = min(rng.randint(1, 8), stop - i)
            items = [{"chunk": parts[j], "stream_end": j == len(parts) - 1} for j in range(i, i + n)]
            if i == 0:
                append(conv, **items.pop(0))
            if items:
                assert len(run(conv, items)) == len(items)
            i += n

    await database_sync_to_async(write)(0, join_at)
    listener = await listen(conv.id)
    page = await database_sync_to_async(messaging_selectors.messages_page)(tenant="default", user_id="bob", conversation_id=conv.id)
    snapshot = page.messages[0]
    text, next_chunk = snapshot.content, snapshot.stream_chunk_count
    await database_sync_to_async(write)(join_at, len(parts))
    for event in await listener.until(lambda e: e["event"] == "message.updated"):
        if event["event"] == "message.stream_chunk":
            # A run is committed with its row: an event never straddles a snapshot's count.
            assert event["chunk_index"] >= next_chunk or event["last_chunk_index"] < next_chunk
            if event["chunk_index"] == next_chunk:
                text += event["data"]["delta"]
                next_chunk = event["last_chunk_index"] + 1
    assert (text, next_chunk) == ("".join(parts), len(parts))
    loaded = await chunk_gap_loader(snapshot.id, 0)
    assert orjson.loads(loaded["frame"])["data"]["delta"] == "".join(parts)


# --- one chunk in one statement: stream_append_next (the WebSocket handler's later chunks) ---


def append_next(conv, chunk, sender="alice", cmid="s1", tenant="default", **kw):
    return services.stream_append_next(
        tenant=tenant, sender=sender, conversation_id=conv.id, client_msg_id=cmid, chunk=chunk, **kw
    )


def next_at_a_time(conv, items, cmid, **kw):
    got = []
    for item in items:
        try:
            got.append(outcome(append_next(conv, cmid=cmid, **item, **kw)))
        except (Conflict, Invalid, TooLarge, Forbidden, NotFound) as exc:
            got.append(outcome(exc))
    return got


def test_the_one_statement_path_answers_every_chunk_exactly_as_stream_append(make_conversation, settings):
    """Random chunks (repeats, gaps, bad input, ends, chunks after the end, and text whose
    JSON escapes decide whether it fits MAX_MESSAGE_BYTES): the same answers and the same
    stream as stream_append, chunk by chunk."""
    settings.MAX_MESSAGE_BYTES = 90
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    conv = make_conversation()
    for trial in range(30):
        a, b = f"a{trial}", f"b{trial}"
        append(conv, "start", cmid=a)
        append(conv, "start", cmid=b)
        items, nxt = [], 1
        for _ in range(rng.randint(2, 25)):
            kind = rng.random()
            item = {"chunk": rng.choice(["x", "", "é好", '"q"', "\\", "\n\t", "\x01\x1f", "z" * rng.randint(1, 12)])}
            if kind < 0.7:
                item["chunk_index"] = nxt
                nxt += 1
            elif kind < 0.78:
                nxt += 1  # chunk_index omitted: the next one
            elif kind < 0.86:
                item["chunk_index"] = rng.randint(0, nxt + 2)  # a repeat, or ahead
            elif kind < 0.9:
                item["chunk"] = rng.choice([7, None, "nul\x00"])
            elif kind < 0.95:
                item["stream_end"] = True
            else:
                item["chunk_index"], item["stream_end"] = rng.choice([(True, False), (1.0, False), (nxt, "yes")])
            items.append(item)
        expected = one_at_a_time(conv, items, a)
        assert next_at_a_time(conv, items, b) == expected, (seed, trial, items)
        assert stream_state(b)[:3] == stream_state(a)[:3], (seed, trial, items)
        assert [c[1] for c in stream_state(b)[3]] == [c[1] for c in stream_state(a)[3]]


def test_the_size_limit_counts_json_escapes_on_the_one_statement_path(make_conversation, settings):
    """The database measures the stored text's JSON exactly as check_content_size does."""
    settings.MAX_MESSAGE_BYTES = 40
    conv = make_conversation()
    append(conv, '"\n')  # stored as "\"\n" (quoted and escaped: 6 bytes)
    append_next(conv, "\x01" * 4, chunk_index=1)  # 4 x \u0001: 30 bytes in all
    with pytest.raises(TooLarge):
        append_next(conv, "é" * 6, chunk_index=2)  # 12 more bytes: 42
    assert append_next(conv, "é" * 5, chunk_index=2).applied  # 40: exactly the limit
    with pytest.raises(TooLarge):
        append_next(conv, "x", chunk_index=3)
    assert (row().content, row().stream_chunk_count) == ('"\n' + "\x01" * 4 + "é" * 5, 3)


@pytest.mark.parametrize("who", ["other_tenant", "non_member", "removed", "other_sender"])
def test_the_one_statement_path_refuses_as_stream_append_does(make_conversation, who):
    from messaging.services import member_remove

    conv = make_conversation(others=("bob",))
    append(conv, "a")
    kw = {"chunk_index": 1}
    if who == "other_tenant":
        kw["tenant"] = "acme"
    elif who == "non_member":
        kw["sender"] = "mallory"
    elif who == "removed":
        member_remove(tenant="default", conversation_id=conv.id, actor="alice", user_id="alice")
    else:
        kw["sender"] = "bob"
    with pytest.raises((NotFound, Forbidden)) as slow:
        append(conv, "b", **kw)
    with pytest.raises(type(slow.value)) as fast:
        append_next(conv, "b", **kw)
    assert fast.value.detail == slow.value.detail
    assert (row().content, row().stream_chunk_count) == ("a", 1)


def test_a_next_chunk_is_one_statement_on_postgresql(make_conversation, django_assert_num_queries):
    conv = make_conversation()
    append(conv, "a")
    # PostgreSQL: one statement; elsewhere stream_append (SAVEPOINT, SELECT, UPDATE, INSERT, RELEASE).
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 5):
        result = append_next(conv, "b", chunk_index=1)
    stored = row()
    assert (result.chunk_index, result.applied, result.started, result.stream_end) == (1, True, False, False)
    for name in ("id", "tenant", "conversation_id", "seq", "sender_id", "type", "client_msg_id", "created_at", "stream_state"):
        assert getattr(result.message, name) == getattr(stored, name), name
    assert (result.message.stream_chunk_count, result.message.content) == (2, "ab")  # the text is read when asked for
    assert list(StreamChunk.objects.filter(message=stored).order_by("index").values_list("index", "text")) == [(0, "a"), (1, "b")]


# --- many streams' next chunks in one statement: streams_append_next (the assistants' group commit) ---


def next_chunks(*items):
    """items: (conversation, client_msg_id, chunk[, sender, tenant])."""
    chunks = []
    for conv, cmid, chunk, *rest in items:
        sender, tenant = (rest + ["alice", "default"][len(rest):])[:2]
        message = Message.objects.filter(conversation=conv, client_msg_id=cmid).first()
        chunks.append(services.NextChunk(tenant=tenant, sender=sender, message_id=message.id if message else "missing", chunk=chunk))
    return chunks


def next_many(*items):
    return services.streams_append_next(chunks=next_chunks(*items))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite leaves every chunk to stream_append (tested below)")
def test_many_streams_take_their_next_chunk_in_one_statement(make_conversation, django_assert_num_queries):
    conv, other = make_conversation(), make_conversation()
    append(conv, "a", cmid="s1")
    append(conv, "x", cmid="s2")
    append(other, "é", cmid="s3")
    chunks = next_chunks((conv, "s1", "b"), (conv, "s2", 'y"\n'), (other, "s3", "好"))
    with django_assert_num_queries(1):
        applied = services.streams_append_next(chunks=chunks)
    assert applied == [True, True, True]
    assert [(m.content, m.stream_chunk_count) for m in Message.objects.order_by("client_msg_id")] == [
        ("ab", 2), ('xy"\n', 2), ("é好", 2)
    ]
    assert list(StreamChunk.objects.filter(message__client_msg_id="s2").values_list("index", "text")) == [(0, "x"), (1, 'y"\n')]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite leaves every chunk to stream_append")
def test_many_streams_are_one_statement_text_for_any_batch_with_any_characters(make_conversation):
    """The rows go as arrays: the same statement for 1 or 3 streams, and array syntax in a
    chunk is text like any other."""
    conv = make_conversation()
    for cmid in ("s1", "s2", "s3"):
        append(conv, "<", cmid=cmid)
    tricky = ['{a,b}', 'NULL', 'back\\slash "q" \'s\'']
    first, batch = next_chunks((conv, "s1", " ")), next_chunks(*((conv, f"s{k + 1}", text) for k, text in enumerate(tricky)))
    with CaptureQueriesContext(connection) as one:
        assert services.streams_append_next(chunks=first) == [True]
    with CaptureQueriesContext(connection) as three:
        assert services.streams_append_next(chunks=batch) == [True] * 3
    assert len(one.captured_queries) == len(three.captured_queries) == 1
    statement = one.captured_queries[0]["sql"]
    assert statement.split("unnest(")[0] == three.captured_queries[0]["sql"].split("unnest(")[0]
    assert [m.content for m in Message.objects.order_by("client_msg_id")] == ["< " + tricky[0], "<" + tricky[1], "<" + tricky[2]]


@pytest.mark.parametrize("why", ["ended", "non_member", "removed", "other_tenant", "other_sender", "too_large", "nul", "missing"])
def test_a_chunk_many_cannot_take_is_left_to_stream_append_and_writes_nothing(make_conversation, settings, why):
    """One refused chunk does not stop the others; on SQLite every chunk is refused."""
    from messaging.services import member_remove

    settings.MAX_MESSAGE_BYTES = 40
    conv = make_conversation(others=("bob",))
    append(conv, "a", cmid="ok")
    append(conv, "a", cmid="s1")
    item = [conv, "s1", "b"]
    if why == "ended":
        append(conv, "", cmid="s1", stream_end=True)
    elif why == "non_member":
        item += ["mallory"]
    elif why == "removed":
        item += ["alice"]
    elif why == "other_tenant":
        item += ["alice", "acme"]
    elif why == "other_sender":
        item += ["bob"]
    elif why == "too_large":
        item[2] = "z" * 40
    elif why == "nul":
        item[2] = "b\x00"
    else:
        item[1] = "nope"
    before = stream_state("s1")
    if why == "removed":
        append(conv, "a", cmid="bobs", sender="bob")
        member_remove(tenant="default", conversation_id=conv.id, actor="alice", user_id="alice")
        applied = next_many(tuple(item), (conv, "bobs", "c", "bob"))
        expected = [False, connection.vendor == "postgresql"]
    else:
        applied = next_many(tuple(item), (conv, "ok", "c"))
        expected = [False, connection.vendor == "postgresql"]
    assert applied == expected
    assert stream_state("s1") == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only: SQLite leaves the chunks to stream_append")
async def test_many_streams_publish_each_chunk_after_commit(make_conversation, listen):
    conv = await database_sync_to_async(make_conversation)()
    listener = await listen(conv.id)
    await database_sync_to_async(append)(conv, "Hel", cmid="s1")
    await database_sync_to_async(append)(conv, "Wor", cmid="s2")
    # Both streams' message.created and first chunk: the listener's subscription is live.
    assert [(await listener.next())["event"] for _ in range(4)] == ["message.created", "message.stream_chunk"] * 2

    def rolled_back():
        from django.db import transaction

        with pytest.raises(RuntimeError), transaction.atomic():
            assert next_many((conv, "s1", "NO"), (conv, "s2", "PE")) == [True, True]
            raise RuntimeError

    await database_sync_to_async(rolled_back)()
    with pytest.raises(asyncio.TimeoutError):
        await listener.next(timeout=0.3)  # nothing of the rolled-back statement
    assert await database_sync_to_async(next_many)((conv, "s1", "lo"), (conv, "s2", "ld")) == [True, True]
    got = sorted([await listener.next(), await listener.next()], key=lambda e: e["data"]["stream_id"])
    assert [(e["event"], e["data"]["stream_id"], e["chunk_index"], e["data"]["delta"]) for e in got] == [
        ("message.stream_chunk", "s1", 1, "lo"),
        ("message.stream_chunk", "s2", 1, "ld"),
    ]
    assert [m.content for m in await database_sync_to_async(list)(Message.objects.order_by("client_msg_id"))] == ["Hello", "World"]


@pytest.mark.parametrize("starting", [False, True])
def test_a_start_takes_one_locking_statement_before_its_writes(make_conversation, django_assert_num_queries, starting):
    conv = make_conversation()
    # Without `starting`: the stream's look-up first. Then the locking statement (which also
    # finds the sender's stream and another sender's), the INSERT with the seq, the first
    # chunk; SAVEPOINT/RELEASE inside the test's transaction.
    with django_assert_num_queries(START_QUERIES + (0 if starting else 1)):
        result = append(conv, "a", starting=starting)
    assert result.started and row().content == "a"


@pytest.mark.parametrize("existing", ["mine", "bobs"])
def test_starting_answers_exactly_as_the_ordinary_path(make_conversation, existing):
    conv = make_conversation(others=("bob",))
    append(conv, "first", sender="alice" if existing == "mine" else "bob")
    if existing == "mine":
        result = append(conv, " second", starting=True)
        assert (result.started, result.chunk_index, row().content) == (False, 1, "first second")
    else:
        with pytest.raises(Forbidden):
            append(conv, "hijack", starting=True)
        assert Message.objects.count() == 1


def test_without_a_savepoint_a_refused_start_leaves_the_callers_transaction_to_roll_back(make_conversation):
    from django.db import transaction

    conv = make_conversation(others=("bob",))
    append(conv, "bobs", sender="bob")
    with pytest.raises(Forbidden), transaction.atomic():
        append(conv, "hijack", starting=True, savepoint=False)
    assert Message.objects.count() == 1
