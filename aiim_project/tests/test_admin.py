"""Operator admin: superusers only, read-only data, actions through the services (events fire
on the real channel layer)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from aiim_project.core.events import conversation_group
from messaging.models import Member, Message

CHANGELISTS = [
    "admin:messaging_conversation_changelist",
    "admin:messaging_member_changelist",
    "admin:messaging_message_changelist",
    "admin:receipts_cursormove_changelist",
]


@pytest.fixture
def data(make_conversation, send):
    mine = make_conversation("alice", ["bob"], name="team")
    theirs = make_conversation("carol", ["dan"], tenant="other", name="secret plans")
    send(mine, content="hello operators")
    send(mine, client_msg_id="s1", stream_state="streaming")
    send(theirs, sender="carol", tenant="other", content="other tenant text")
    return mine, theirs


@pytest.mark.django_db
@pytest.mark.parametrize("name", CHANGELISTS)
def test_anonymous_users_are_sent_to_the_login_page(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.django_db
def test_staff_without_permissions_is_refused(client, data):
    user = User.objects.create_user("intern", password="x", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:messaging_message_changelist")).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("name", CHANGELISTS)
def test_changelists_load_for_a_superuser(admin_client, data, name):
    assert admin_client.get(reverse(name)).status_code == 200


@pytest.mark.django_db
def test_conversation_page_shows_members_inline_read_only(admin_client, data):
    mine, _ = data
    response = admin_client.get(reverse("admin:messaging_conversation_change", args=[mine.id]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "alice" in page and "bob" in page
    assert 'name="name"' not in page  # no editable field: changes go through the services
    assert f"conversation={mine.id}" in page  # link to this conversation's messages


@pytest.mark.django_db
def test_data_cannot_be_changed_through_forms(admin_client, data):
    mine, _ = data
    url = reverse("admin:messaging_conversation_change", args=[mine.id])
    admin_client.post(url, {"name": "renamed"})
    mine.refresh_from_db()
    assert mine.name == "team"
    assert admin_client.get(reverse("admin:messaging_message_add")).status_code == 403


@pytest.mark.django_db
def test_messages_filter_by_tenant_and_conversation_and_search(admin_client, data):
    mine, theirs = data
    url = reverse("admin:messaging_message_changelist")

    page = admin_client.get(url, {"tenant": "default", "conversation": mine.id}).content.decode()
    assert "hello operators" in page and "other tenant text" not in page

    page = admin_client.get(url, {"tenant": "other"}).content.decode()
    assert "other tenant text" in page and "hello operators" not in page

    page = admin_client.get(url, {"q": "operators"}).content.decode()
    assert "hello operators" in page and "other tenant text" not in page


@pytest.mark.django_db
def test_streams_are_listed_with_their_state(admin_client, data):
    page = admin_client.get(reverse("admin:messaging_message_changelist"), {"stream_state__exact": "streaming"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "streaming" in text and "hello operators" not in text


@pytest.mark.django_db
def test_message_list_costs_the_same_queries_for_more_rows(admin_client, make_conversation, send):
    conversation = make_conversation("alice", ["bob"])
    url = reverse("admin:messaging_message_changelist")

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(url).status_code == 200
        return len(ctx)

    send(conversation)
    few = queries()
    for _ in range(20):
        send(conversation)
    assert queries() == few


@pytest.mark.django_db(transaction=True)
async def test_remove_member_action_fires_member_left(make_conversation):
    conversation = await database_sync_to_async(make_conversation)("alice", ["bob", "eve"])
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(conversation_group("default", conversation.id), channel)

    def act():
        bob = Member.objects.get(conversation=conversation, user_id="bob")
        admin = User.objects.create_superuser("ops", password="x")
        client = Client()
        client.force_login(admin)
        return client.post(
            reverse("admin:messaging_member_changelist"),
            {"action": "remove_members", "_selected_action": [bob.pk]},
        )

    response = await database_sync_to_async(act)()

    assert response.status_code == 302
    event = await asyncio.wait_for(layer.receive(channel), 5)
    while event["event"] == "member.joined":  # the creation's own events may still be on their way
        event = await asyncio.wait_for(layer.receive(channel), 5)
    assert (event["event"], event["user_id"], event["conversation_id"]) == ("member.left", "bob", conversation.id)
    remaining = await database_sync_to_async(
        lambda: sorted(Member.objects.filter(conversation=conversation).values_list("user_id", flat=True))
    )()
    assert remaining == ["alice", "eve"]


@pytest.mark.django_db(transaction=True)
async def test_abort_stream_action_ends_the_stream_and_fires_message_updated(make_conversation):
    from streaming import services as streaming

    conversation = await database_sync_to_async(make_conversation)("alice", ["bob"])

    def start_stream():
        return streaming.stream_append(
            tenant="default", sender="alice", conversation_id=conversation.id, client_msg_id="answer-1", chunk="Hel"
        ).message

    stream = await database_sync_to_async(start_stream)()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(conversation_group("default", conversation.id), channel)

    def act():
        admin = User.objects.create_superuser("ops", password="x")
        client = Client()
        client.force_login(admin)
        return client.post(
            reverse("admin:messaging_message_changelist"), {"action": "abort_streams", "_selected_action": [stream.pk]}
        )

    assert (await database_sync_to_async(act)()).status_code == 302
    event = await asyncio.wait_for(layer.receive(channel), 5)
    assert event["event"] == "message.updated"
    state = await database_sync_to_async(lambda: Message.objects.get(pk=stream.pk).stream_state)()
    assert state == "aborted"
