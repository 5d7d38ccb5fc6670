"""The `delivered` and `read` frames through the real gateway and channel layer."""

import pytest
from channels.db import database_sync_to_async

from tests.support.communicator import ask, connect, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


async def next_event(comm):
    frame = await comm.receive_json_from(timeout=5)
    assert frame["type"] == "event", frame
    return frame["data"]


async def still_open_and_quiet(comm):
    """Nothing else arrived, and the connection still answers."""
    assert await comm.receive_nothing(timeout=0.3)
    assert await ask(comm, {"type": "ping"}) == {"type": "pong"}


@pytest.fixture
def conversation_with(make_conversation, send):
    def make(count, **kw):
        conv = make_conversation(**kw)
        messages = [send(conv, tenant=conv.tenant) for _ in range(count)]
        return conv, messages

    return database_sync_to_async(make)


def unread_over_rest(api, user_id, conversation_id):
    r = api(user_id).get("/api/aiim/conversations")
    return {c["conversation_id"]: c["unread_count"] for c in r.json()["conversations"]}[conversation_id]


async def test_phone_reads_and_the_laptop_gets_the_read_cursor_once(conversation_with, api):
    conv, _ = await conversation_with(3)
    alice, phone, laptop, laptop_subscribed = [await connect(u) for u in ("alice", "bob", "bob", "bob")]
    await subscribe(alice, conv.id)
    await subscribe(laptop_subscribed, conv.id)
    assert await database_sync_to_async(unread_over_rest)(api, "bob", conv.id) == 3

    ack = await ask(phone, {"type": "read", "conversation_id": conv.id, "last_read_seq": 2, "req_id": "r1"})
    assert ack == {"type": "ack", "event": "receipt.read", "conversation_id": conv.id, "last_read_seq": 2, "req_id": "r1"}

    expected = {"event": "receipt.read", "conversation_id": conv.id, "user_id": "bob", "last_read_seq": 2, "unread_count": 1}
    # Through the user group for a device not subscribed to the conversation; once, not
    # twice, for one that is (it is in both groups).
    assert await next_event(laptop) == expected
    assert await next_event(laptop_subscribed) == expected
    assert await next_event(alice) == expected
    assert await next_event(phone) == expected
    for comm in (laptop, laptop_subscribed, alice, phone):
        await still_open_and_quiet(comm)
    assert await database_sync_to_async(unread_over_rest)(api, "bob", conv.id) == 1

    # A no-op is acknowledged and publishes nothing.
    ack = await ask(phone, {"type": "read", "conversation_id": conv.id, "last_read_seq": 1})
    assert ack["event"] == "receipt.read"
    await still_open_and_quiet(laptop)
    await still_open_and_quiet(alice)
    for comm in (alice, phone, laptop, laptop_subscribed):
        await comm.disconnect()


async def test_delivered_frame_reaches_the_conversation(conversation_with):
    conv, (first, _) = await conversation_with(2)
    alice, bob = await connect("alice"), await connect("bob")
    await subscribe(alice, conv.id)

    ack = await ask(bob, {"type": "delivered", "conversation_id": conv.id, "message_id": first.id})
    assert ack == {"type": "ack", "event": "receipt.delivered", "conversation_id": conv.id, "up_to_seq": 1}
    assert await next_event(alice) == {
        "event": "receipt.delivered",
        "conversation_id": conv.id,
        "user_id": "bob",
        "up_to_seq": 1,
        "seq": 1,  # the original AIIM's name for it
        "message_id": first.id,
    }
    # Delivery is not sent to the user's own devices through the user group.
    await still_open_and_quiet(bob)
    await alice.disconnect()
    await bob.disconnect()


@pytest.mark.parametrize("frame_type", ["delivered", "read"])
async def test_another_tenants_conversation_is_not_found_like_a_missing_one(conversation_with, frame_type):
    theirs, _ = await conversation_with(1, tenant="other", creator="alice", others=["bob"])
    bob = await connect("bob")
    seq_field = "up_to_seq" if frame_type == "delivered" else "last_read_seq"
    other = await ask(bob, {"type": frame_type, "conversation_id": theirs.id, seq_field: 1})
    missing = await ask(bob, {"type": frame_type, "conversation_id": "no-such-conversation", seq_field: 1})
    assert other["code"] == missing["code"] == "not_found"
    assert other["message"] == missing["message"]
    await still_open_and_quiet(bob)
    await bob.disconnect()


@pytest.mark.parametrize(
    "frame,code",
    [
        ({"type": "delivered"}, "invalid"),
        ({"type": "delivered", "conversation_id": "{conv}"}, "invalid"),
        ({"type": "delivered", "conversation_id": "{conv}", "up_to_seq": 1, "message_id": "{first}"}, "invalid"),
        ({"type": "delivered", "conversation_id": "{conv}", "up_to_seq": "1"}, "invalid"),
        ({"type": "delivered", "conversation_id": "{conv}", "up_to_seq": -2}, "invalid"),
        ({"type": "delivered", "conversation_id": 5, "up_to_seq": 1}, "invalid"),
        ({"type": "delivered", "conversation_id": "{conv}", "message_id": "nope"}, "not_found"),
        ({"type": "read", "conversation_id": "{conv}"}, "invalid"),
        ({"type": "read", "conversation_id": "{conv}", "last_read_seq": True}, "invalid"),
        ({"type": "read", "conversation_id": "{conv}", "message_id": ["x"]}, "invalid"),
        ({"type": "read", "conversation_id": "a\u0000b", "last_read_seq": 1}, "invalid"),
        ({"type": "read", "conversation_id": "{conv}", "last_read_seq": 1, "user_id": "alice"}, "forbidden"),
        ({"type": "read", "conversation_id": "{conv}", "last_read_seq": 1, "tenant_id": "other"}, "tenant_mismatch"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays_open(conversation_with, frame, code):
    conv, (first,) = await conversation_with(1)
    frame = {k: {"{conv}": conv.id, "{first}": first.id}.get(v, v) if isinstance(v, str) else v for k, v in frame.items()}
    bob = await connect("bob")
    reply = await ask(bob, {**frame, "req_id": "x1"})
    assert reply["type"] == "error" and reply["code"] == code and reply["req_id"] == "x1", reply
    await still_open_and_quiet(bob)
    await bob.disconnect()


async def test_non_member_is_forbidden(conversation_with):
    conv, _ = await conversation_with(1)
    mallory = await connect("mallory")
    reply = await ask(mallory, {"type": "read", "conversation_id": conv.id, "last_read_seq": 1})
    assert reply["code"] == "forbidden"
    await mallory.disconnect()
