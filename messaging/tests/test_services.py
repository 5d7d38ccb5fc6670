"""Services: the writes, their checks and the events they register for after commit."""

from __future__ import annotations

import orjson
import pytest
from django.conf import settings
from django.db import connection

from aiim_project.core import checks, events
from aiim_project.core.errors import Forbidden, Invalid, NotFound, TooLarge
from messaging import services
from messaging.models import Conversation, Member, Message
from messaging.seq import seq_key
from tests.support.database import query_plan

pytestmark = pytest.mark.django_db


def test_creator_is_always_owner(make_conversation):
    conversation = make_conversation("alice", ["bob", "alice"], members=[services.MemberSpec("alice", "member")])
    roles = dict(Member.objects.filter(conversation=conversation).values_list("user_id", "role"))
    assert roles == {"alice": "owner", "bob": "member"}
    assert set(Member.objects.filter(conversation=conversation).values_list("tenant", flat=True)) == {"default"}


def test_create_registers_member_joined_for_the_others_as_one_batch(django_capture_on_commit_callbacks, monkeypatch):
    published: list[list] = []
    monkeypatch.setattr(events, "publish_all_now", published.append)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        conversation, _ = services.conversation_create(tenant="default", creator="alice", type="group", member_ids=["bob", "carol"])
    # bob and carol (the creator needs no notice), handed over together: one publish batch
    assert len(callbacks) == 1 and len(published) == 1
    assert [(groups, m["event"], m["user_id"]) for groups, m in published[0]] == [
        ([events.conversation_group("default", conversation.id), events.user_group("default", u)], "member.joined", u) for u in ("bob", "carol")
    ]


def test_direct_pair_is_unique_and_a_leaver_rejoins_by_creating_it(django_capture_on_commit_callbacks):
    first, created = services.conversation_create(tenant="default", creator="alice", member_ids=["bob"])
    services.message_send(tenant="default", sender="alice", conversation_id=first.id, content="hi")
    services.member_remove(tenant="default", actor="bob", conversation_id=first.id, user_id="bob")
    with django_capture_on_commit_callbacks() as callbacks:
        again, created_again = services.conversation_create(tenant="default", creator="bob", member_ids=["alice"])
    assert (created, created_again, again.id) == (True, False, first.id)
    bob = Member.objects.get(conversation=first, user_id="bob")
    assert (bob.joined_seq, bob.read_seq) == (1, 1)
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "direct", "member_ids": ["bob", "carol"]},
        {"type": "direct", "member_ids": []},
        {"type": "room", "member_ids": ["bob"]},
        {"type": "group", "member_ids": [""]},
        {"type": "group", "member_ids": [5]},
        {"type": "group", "member_ids": ["a\x00b"]},
        {"type": "group", "members": [services.MemberSpec("bob", "admin")]},
        {"type": "group", "metadata": {"n": 2**80}},
    ],
)
def test_create_refuses_bad_input(kwargs):
    with pytest.raises(Invalid):
        services.conversation_create(tenant="default", creator="alice", **kwargs)
    assert not Conversation.objects.exists()


def test_member_add_starts_new_members_at_the_current_seq(make_conversation, send, django_capture_on_commit_callbacks):
    conversation = make_conversation("alice", ["bob"])
    send(conversation, "alice", "1")
    send(conversation, "bob", "2")
    with django_capture_on_commit_callbacks() as callbacks:
        services.member_add(tenant="default", actor="alice", conversation_id=conversation.id, user_ids=["dave", "dave", "bob"])
    dave = Member.objects.get(conversation=conversation, user_id="dave")
    assert (dave.joined_seq, dave.delivered_seq, dave.read_seq, dave.tenant) == (2, 2, 2, "default")
    assert len(callbacks) == 1  # bob was already a member; dave counted once


def test_member_add_checks(make_conversation):
    group = make_conversation("alice", ["bob"])
    with pytest.raises(Forbidden):
        services.member_add(tenant="default", actor="bob", conversation_id=group.id, user_ids=["x"])
    with pytest.raises(Forbidden):
        services.member_add(tenant="default", actor="carol", conversation_id=group.id, user_ids=["x"])
    with pytest.raises(NotFound):
        services.member_add(tenant="other", actor="alice", conversation_id=group.id, user_ids=["x"])
    with pytest.raises(Invalid):
        services.member_add(tenant="default", actor="alice", conversation_id=group.id, user_ids=[])
    assert not Member.objects.filter(user_id="x").exists()


def test_member_remove_notifies_the_removed_member(make_conversation, django_capture_on_commit_callbacks):
    group = make_conversation("alice", ["bob"])
    with django_capture_on_commit_callbacks() as callbacks:
        services.member_remove(tenant="default", actor="alice", conversation_id=group.id, user_id="bob")
    assert len(callbacks) == 1
    assert not Member.objects.filter(conversation=group, user_id="bob").exists()


def _roles(conversation) -> dict[str, str]:
    return dict(Member.objects.filter(conversation=conversation).values_list("user_id", "role"))


def test_last_owner_leaving_hands_the_group_to_the_longest_standing_person(make_conversation, send):
    group = make_conversation("alice", ["bot"], members=[services.MemberSpec("bot", "assistant")])
    send(group, "alice", "before bob and carol")
    services.member_add(tenant="default", actor="alice", conversation_id=group.id, user_ids=["bob"])
    send(group, "alice", "before carol")
    services.member_add(tenant="default", actor="alice", conversation_id=group.id, user_ids=["carol"])
    services.member_remove(tenant="default", actor="alice", conversation_id=group.id, user_id="alice")
    # bob joined before carol; the assistant joined first but does not inherit control.
    assert _roles(group) == {"bot": "assistant", "bob": "owner", "carol": "member"}
    services.member_remove(tenant="default", actor="bob", conversation_id=group.id, user_id="carol")  # bob can act as owner
    services.member_remove(tenant="default", actor="bob", conversation_id=group.id, user_id="bob")
    assert _roles(group) == {"bot": "owner"}  # no person left: better an owner than none


def test_an_owner_leaving_while_another_owner_stays_promotes_nobody(make_conversation):
    group = make_conversation("alice", ["bob", "carol"], members=[services.MemberSpec("carol", "owner")])
    services.member_remove(tenant="default", actor="alice", conversation_id=group.id, user_id="alice")
    assert _roles(group) == {"bob": "member", "carol": "owner"}


def test_send_stores_and_registers_one_event(make_conversation, django_capture_on_commit_callbacks):
    group = make_conversation("alice", ["bob"])
    before = group.updated_at
    with django_capture_on_commit_callbacks() as callbacks:
        message, created = services.message_send(tenant="default", sender="bob", conversation_id=group.id, content={"a": 1})
    assert created and message.seq == 1 and message.tenant == "default"
    assert len(callbacks) == 1
    group.refresh_from_db()
    assert group.last_seq == 1 and group.updated_at == max(before, services.activity_time(message.created_at))


def test_event_frame_is_the_protocol_shape(make_conversation, django_capture_on_commit_callbacks, monkeypatch):
    from aiim_project.core import events

    group = make_conversation("alice", ["bob"])
    published = []
    # capture what would go to the channel layer (the layer itself is the gateway's to test)
    monkeypatch.setattr(events, "publish_now", lambda groups, message: published.append((groups, message)))
    with django_capture_on_commit_callbacks(execute=True):
        message, _ = services.message_send(tenant="default", sender="bob", conversation_id=group.id, content="hi")
    (groups, event), = published
    assert groups == [events.conversation_group("default", group.id)]
    assert (event["type"], event["event"], event["seq"]) == ("aiim.event", "message.created", 1)
    frame = orjson.loads(event["frame"])
    assert frame["type"] == "event" and frame["channel"] == f"im:conv:{group.id}"
    assert frame["data"]["event"] == "message.created" and frame["data"]["message"]["message_id"] == message.id


def test_idempotent_repeat_returns_the_original_with_no_event_and_no_seq(make_conversation, django_capture_on_commit_callbacks):
    group = make_conversation("alice", ["bob"])
    first, created = services.message_send(tenant="default", sender="alice", conversation_id=group.id, content="a", client_msg_id="k")
    with django_capture_on_commit_callbacks() as callbacks:
        repeat, created_again = services.message_send(
            tenant="default", sender="alice", conversation_id=group.id, content="b", client_msg_id="k"
        )
    assert (created, created_again, repeat.pk, repeat.seq) == (True, False, first.pk, 1)
    assert callbacks == []
    nxt, _ = services.message_send(tenant="default", sender="alice", conversation_id=group.id, content="c")
    assert nxt.seq == 2
    if settings.REDIS_URL:
        from aiim_project.core.redis import sync_client

        assert int(sync_client().get(seq_key(group.id))) == 2


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"sender": "carol"}, Forbidden),
        ({"tenant": "other"}, NotFound),
        ({"conversation_id": "missing"}, NotFound),
        ({"content": ""}, Invalid),
        ({"content": None}, Invalid),
        ({"type": "sticker"}, Invalid),
        ({"reply_to": "no-such-message"}, Invalid),
        ({"metadata": ["not", "a", "dict"]}, Invalid),
        ({"client_msg_id": 7}, Invalid),
        ({"content": "x" * (64 * 1024 + 1)}, TooLarge),
    ],
)
def test_rejected_messages_consume_no_seq(make_conversation, send, kwargs, error):
    group = make_conversation("alice", ["bob"])
    send(group, "alice", "one")
    call = {"tenant": "default", "sender": "alice", "conversation_id": group.id, "content": "x", **kwargs}
    with pytest.raises(error):
        services.message_send(**call)
    assert send(group, "alice", "two").seq == 2
    if settings.REDIS_URL:
        from aiim_project.core.redis import sync_client

        assert int(sync_client().get(seq_key(group.id))) == 2


def test_seq_collision_raises_the_counter_and_retries(make_conversation, send):
    """A row the counter does not know about (e.g. Redis restored from an old snapshot while
    `last_seq` lagged) makes the insert collide: the send still succeeds, above it."""
    group = make_conversation("alice", ["bob"])
    send(group, "alice", "one")
    Message.objects.create(tenant="default", conversation=group, seq=2, sender_id="bob", content="planted")
    message = send(group, "alice", "two")
    assert message.seq == 3
    assert sorted(Message.objects.filter(conversation=group).values_list("seq", flat=True)) == [1, 2, 3]
    assert send(group, "alice", "three").seq == 4


def test_tenants_are_isolated(make_conversation, send):
    mine = make_conversation("alice", ["bob"], tenant="t1")
    theirs = make_conversation("alice", ["bob"], tenant="t2")
    send(mine, "alice", "x", tenant="t1")
    assert send(theirs, "alice", "y", tenant="t2").seq == 1
    with pytest.raises(NotFound):
        services.message_send(tenant="t2", sender="alice", conversation_id=mine.id, content="z")
    with pytest.raises(NotFound):
        services.member_remove(tenant="t2", actor="alice", conversation_id=mine.id, user_id="bob")
    assert Message.objects.get(conversation=mine).tenant == "t1"


def test_check_tenant():
    checks.check_tenant("t", None)
    checks.check_tenant("t", "t")
    from aiim_project.core.errors import TenantMismatch

    with pytest.raises(TenantMismatch):
        checks.check_tenant("t", "u")


@pytest.mark.django_db(transaction=True)
def test_racing_creates_of_one_direct_pair_give_one_conversation():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    start = threading.Barrier(6)

    def create(i: int) -> tuple[str, bool]:
        try:
            start.wait()
            a, b = ("alice", "bob") if i % 2 else ("bob", "alice")
            conversation, created = services.conversation_create(tenant="default", creator=a, member_ids=[b])
            return conversation.id, created
        finally:
            connection.close()

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(6)))
    assert len({cid for cid, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert Conversation.objects.count() == 1 and Member.objects.count() == 2


def test_group_names_of_lookalike_ids_differ():
    from aiim_project.core import events

    assert events.user_group("a.user.b", "c") != events.user_group("a", "b.user.c")
    assert events.conversation_group("t", "x.conv.y") != events.conversation_group("t.conv.x", "y")
    for name in (events.user_group("acme.com", "ü" * 300), events.conversation_group("default", "abc")):
        assert len(name) < 100 and all(ch.isalnum() or ch in "._-" for ch in name)


def test_a_stream_start_finds_another_senders_stream_of_its_name_by_index(make_conversation):
    """The check reads the index entries of that one name, not the conversation's history."""
    group = make_conversation("alice", ["bob"])
    Message.objects.bulk_create(
        Message(tenant="default", conversation=group, seq=n, sender_id="bob", type="ai", content="x", client_msg_id=f"s{n}", stream_state="completed")
        for n in range(1, 2001)
    )
    Conversation.objects.filter(pk=group.pk).update(last_seq=2000)
    _, taken, others = services.lock_for_stream_start(tenant="default", conversation_id=group.id, sender="alice", client_msg_id="s7")
    assert (taken, others) == (None, True)
    _, taken, others = services.lock_for_stream_start(tenant="default", conversation_id=group.id, sender="alice", client_msg_id="new")
    assert (taken, others) == (None, False)

    plan = query_plan(services._lock_for_send_sql(True), ["alice", "alice", "new", "new", "alice", "default", group.id], analyze="messaging_message")
    assert "message_stream_name" in plan, plan
    if connection.vendor == "postgresql":
        assert "client_msg_id)::text = 'new'" in plan.split("message_stream_name", 1)[1].split("\n")[1], plan
    else:
        assert "message_stream_name (conversation_id=? AND client_msg_id=?)" in plan, plan
