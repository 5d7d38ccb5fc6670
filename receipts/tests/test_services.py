import asyncio
import json
import threading

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from aiim_project.core import events
from aiim_project.core.errors import Forbidden, Invalid, NotFound
from messaging.models import Member, Message
from receipts.models import CursorKind, CursorMove
from receipts.services import cursor_advance
from tests.support.layer import LayerListener

pytestmark = pytest.mark.django_db


def advance(conversation, user_id, kind, **kw):
    return cursor_advance(tenant="default", user_id=user_id, conversation_id=conversation.id, kind=kind, **kw)


def cursors(conversation, user_id):
    m = Member.objects.get(conversation=conversation, user_id=user_id)
    return m.delivered_seq, m.read_seq


def test_cursors_only_move_forward_and_read_implies_delivered(make_conversation, send):
    conv = make_conversation()
    for _ in range(4):
        send(conv)
    assert advance(conv, "bob", CursorKind.READ, seq=2).advanced
    assert cursors(conv, "bob") == (2, 2)
    assert not advance(conv, "bob", CursorKind.READ, seq=1).advanced
    assert not advance(conv, "bob", CursorKind.DELIVERED, seq=2).advanced
    assert cursors(conv, "bob") == (2, 2)
    assert advance(conv, "bob", CursorKind.DELIVERED, seq=4).advanced
    assert cursors(conv, "bob") == (4, 2)
    # Reading below the delivered cursor leaves delivered where it is.
    assert advance(conv, "bob", CursorKind.READ, seq=3).advanced
    assert cursors(conv, "bob") == (4, 3)


def test_seq_beyond_last_seq_is_clamped(make_conversation, send):
    conv = make_conversation()
    send(conv)
    send(conv)
    update = advance(conv, "bob", CursorKind.READ, seq=1000)
    assert update.target_seq == 2
    assert cursors(conv, "bob") == (2, 2)
    # The next message is unread: the cursor did not run ahead of it.
    send(conv)
    assert advance(conv, "bob", CursorKind.READ, seq=3).advanced


def test_message_id_names_its_seq(make_conversation, send):
    conv = make_conversation()
    first = send(conv)
    send(conv)
    assert advance(conv, "bob", CursorKind.DELIVERED, message_id=first.id).target_seq == first.seq
    assert cursors(conv, "bob") == (1, 0)


def test_marking_up_to_own_message_covers_the_others_before_it(make_conversation, send):
    conv = make_conversation()
    send(conv, "alice")
    mine = send(conv, "bob")
    assert advance(conv, "bob", CursorKind.READ, message_id=mine.id).advanced
    assert cursors(conv, "bob") == (2, 2)


def test_one_update_writes_one_row_per_cursor_however_many_messages(make_conversation, send):
    conv = make_conversation(others=["bob", "carol"])
    Message.objects.bulk_create(
        [Message(tenant="default", conversation=conv, seq=s, sender_id="alice", content="x") for s in range(1, 501)]
    )
    conv.last_seq = 500
    conv.save(update_fields=["last_seq"])
    advance(conv, "bob", CursorKind.READ, seq=500)
    moves = list(CursorMove.objects.filter(member__conversation=conv).values_list("member__user_id", "kind", "seq"))
    assert sorted(moves) == [("bob", "delivered", 500), ("bob", "read", 500)]
    advance(conv, "bob", CursorKind.READ, seq=400)
    assert CursorMove.objects.filter(member__conversation=conv).count() == 2


def test_conversation_of_another_tenant_is_not_found_like_a_missing_one(make_conversation):
    theirs = make_conversation(tenant="other", creator="alice", others=["bob"])
    with pytest.raises(NotFound) as other:
        advance(theirs, "bob", CursorKind.READ, seq=1)
    with pytest.raises(NotFound) as missing:
        cursor_advance(tenant="default", user_id="bob", conversation_id="nope", kind=CursorKind.READ, seq=1)
    assert str(other.value) == str(missing.value)


def test_non_member_is_forbidden(make_conversation):
    conv = make_conversation()
    with pytest.raises(Forbidden):
        advance(conv, "mallory", CursorKind.READ, seq=1)


def test_message_of_another_conversation_is_not_found(make_conversation, send):
    conv = make_conversation()
    elsewhere = send(make_conversation(others=["carol"]))
    with pytest.raises(NotFound):
        advance(conv, "bob", CursorKind.READ, message_id=elsewhere.id)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"seq": 1, "message_id": "x"},
        {"seq": -1},
        {"seq": True},
        {"seq": "3"},
        {"seq": 2**63},
        {"message_id": ""},
        {"message_id": 5},
        {"message_id": "a\x00b"},
    ],
)
def test_bad_position_is_invalid(make_conversation, kw):
    conv = make_conversation()
    with pytest.raises(Invalid):
        advance(conv, "bob", CursorKind.READ, **kw)


@pytest.mark.parametrize("conversation_id", [None, "", 7, "x" * 65, "a\x00b"])
def test_bad_conversation_id_is_invalid(db, conversation_id):
    with pytest.raises(Invalid):
        cursor_advance(tenant="default", user_id="bob", conversation_id=conversation_id, kind=CursorKind.READ, seq=1)


# --- events, through the real channel layer ---------------------------------------------


async def _next_event(listener: LayerListener, timeout=2.0):
    """The next receipt event: the set-up's own events (message.created of the messages sent
    before listening) may still be on their way from the publisher."""
    while True:
        event = await listener.next(timeout)
        if event["event"] != "message.created":
            return event


async def _nothing_more(listener: LayerListener):
    with pytest.raises(asyncio.TimeoutError):
        await _next_event(listener, 0.3)


@pytest.mark.django_db(transaction=True)
async def test_read_event_reaches_conversation_and_readers_devices_once_per_update(make_conversation, send):
    conv = await database_sync_to_async(make_conversation)()
    for _ in range(3):
        await database_sync_to_async(send)(conv)
    await database_sync_to_async(send)(conv, "bob")  # seq 4: the reader's own, never unread
    room = await LayerListener.join(events.conversation_group("default", conv.id))
    mine = await LayerListener.join(events.user_group("default", "bob"))

    await database_sync_to_async(advance)(conv, "bob", CursorKind.READ, seq=2)

    for listener in (room, mine):
        event = await _next_event(listener)
        assert (event["event"], event["seq"], event["user_id"]) == ("receipt.read", None, "bob")
        assert json.loads(event["frame"])["data"] == {
            "event": "receipt.read",
            "conversation_id": conv.id,
            "user_id": "bob",
            "last_read_seq": 2,
            "unread_count": 1,  # alice's seq 3
        }
        await _nothing_more(listener)

    # A no-op (the cursor is already there) publishes nothing.
    await database_sync_to_async(advance)(conv, "bob", CursorKind.READ, seq=1)
    await _nothing_more(room)


@pytest.mark.django_db(transaction=True)
async def test_delivered_event_goes_to_the_conversation_only(make_conversation, send):
    conv = await database_sync_to_async(make_conversation)()
    first = await database_sync_to_async(send)(conv)
    room = await LayerListener.join(events.conversation_group("default", conv.id))
    mine = await LayerListener.join(events.user_group("default", "bob"))

    await database_sync_to_async(advance)(conv, "bob", CursorKind.DELIVERED, message_id=first.id)

    event = await _next_event(room)
    assert json.loads(event["frame"])["data"] == {
        "event": "receipt.delivered",
        "conversation_id": conv.id,
        "user_id": "bob",
        "up_to_seq": 1,
        "seq": 1,  # the original AIIM's name for it
        "message_id": first.id,
    }
    await _nothing_more(mine)


# --- concurrency (PostgreSQL: real row locks between real connections) --------------------


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_concurrent_advances_from_two_devices_never_lose_an_update_or_go_back(make_conversation):
    conv = make_conversation()
    last = 200
    Message.objects.bulk_create(
        [Message(tenant="default", conversation=conv, seq=s, sender_id="alice", content="x") for s in range(1, last + 1)]
    )
    conv.last_seq = last
    conv.save(update_fields=["last_seq"])
    # Phone goes up in even steps, laptop in odd ones, racing each other.
    plans = {"phone": list(range(2, last + 1, 2)), "laptop": list(range(1, last + 1, 2))}
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = threading.Event()
    start = threading.Barrier(3)

    def device(seqs):
        try:
            start.wait()
            for s in seqs:
                advance(conv, "bob", CursorKind.READ, seq=s)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    def watcher():
        start.wait()
        while not stop.is_set():
            seen.append(Member.objects.get(conversation=conv, user_id="bob").read_seq)
        connection.close()

    threads = [threading.Thread(target=device, args=(p,)) for p in plans.values()]
    observer = threading.Thread(target=watcher)
    for t in [*threads, observer]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    observer.join()

    assert not errors, errors
    assert cursors(conv, "bob") == (last, last)
    assert seen == sorted(seen), "a reader saw the read cursor go backwards"
    for kind in (CursorKind.READ, CursorKind.DELIVERED):
        moves = list(CursorMove.objects.filter(member__user_id="bob", member__conversation=conv, kind=kind).order_by("id"))
        seqs = [m.seq for m in moves]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "moves must be strictly increasing"
        assert seqs[-1] == last
