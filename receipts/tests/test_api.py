import pytest
from django.db import connection

from messaging import services as messaging_services
from messaging.models import Member
from messaging.rendering import iso

pytestmark = pytest.mark.django_db

DELIVERED = "/api/aiim/receipts/delivered"
READ = "/api/aiim/receipts/read"


def receipts_of(client, message):
    r = client.get(f"/api/aiim/receipts/{message.conversation_id}/{message.id}")
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["conversation_id"], body["message_id"]) == (message.conversation_id, message.id)
    return {x["user_id"]: (x["delivered_at"], x["read_at"]) for x in body["receipts"]}


def stamps(conv, user_id):
    m = Member.objects.get(conversation=conv, user_id=user_id)
    return iso(m.delivered_at), iso(m.read_at)


def statuses(client, conv):
    r = client.get(f"/api/aiim/messages/{conv.id}")
    assert r.status_code == 200, r.content
    return [m["status"] for m in r.json()["messages"]]


def unread(client, conv):
    r = client.get(f"/api/aiim/conversations/{conv.id}")
    assert r.status_code == 200, r.content
    return r.json()["unread_count"]


# --- writes ------------------------------------------------------------------------------


def test_delivered_and_read_answer_204_and_move_the_cursors(api, make_conversation, send):
    conv = make_conversation()
    first, _ = send(conv), send(conv)
    bob = api("bob")
    r = bob.post(DELIVERED, {"conversation_id": conv.id, "message_id": first.id}, format="json")
    assert r.status_code == 204 and r.content == b""
    r = bob.post(READ, {"conversation_id": conv.id, "last_read_seq": 2, "user_id": "bob"}, format="json")
    assert r.status_code == 204
    m = Member.objects.get(conversation=conv, user_id="bob")
    assert (m.delivered_seq, m.read_seq) == (2, 2)
    # Lower values are accepted and ignored.
    assert bob.post(READ, {"conversation_id": conv.id, "last_read_message_id": first.id}, format="json").status_code == 204
    assert bob.post(DELIVERED, {"conversation_id": conv.id, "up_to_seq": 0}, format="json").status_code == 204
    m.refresh_from_db()
    assert (m.delivered_seq, m.read_seq) == (2, 2)


def test_trailing_slash_is_accepted(api, make_conversation, send):
    conv = make_conversation()
    send(conv)
    assert api("bob").post(READ + "/", {"conversation_id": conv.id, "last_read_seq": 1}, format="json").status_code == 204


def test_reading_for_someone_else_is_forbidden(api, make_conversation, send):
    conv = make_conversation()
    send(conv)
    r = api("bob").post(READ, {"conversation_id": conv.id, "last_read_seq": 1, "user_id": "alice"}, format="json")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert Member.objects.get(conversation=conv, user_id="alice").read_seq == 0


@pytest.mark.parametrize("path", [DELIVERED, READ])
def test_tenant_id_in_the_body_must_match_the_token(api, make_conversation, path):
    conv = make_conversation()
    r = api("bob").post(path, {"conversation_id": conv.id, "up_to_seq": 1, "last_read_seq": 1, "tenant_id": "other"}, format="json")
    assert r.status_code == 403 and r.json()["code"] == "tenant_mismatch"


@pytest.mark.parametrize("path,seq_field", [(DELIVERED, "up_to_seq"), (READ, "last_read_seq")])
def test_another_tenants_conversation_answers_like_a_missing_one(api, make_conversation, send, path, seq_field):
    theirs = make_conversation(tenant="other", creator="alice", others=["bob"])
    send(theirs, tenant="other")
    bob = api("bob")
    other = bob.post(path, {"conversation_id": theirs.id, seq_field: 1}, format="json")
    missing = bob.post(path, {"conversation_id": "no-such-conversation", seq_field: 1}, format="json")
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json() == {"detail": "Conversation not found.", "code": "not_found"}
    assert Member.objects.get(conversation=theirs, user_id="bob").read_seq == 0


@pytest.mark.parametrize("path,seq_field", [(DELIVERED, "up_to_seq"), (READ, "last_read_seq")])
def test_non_member_is_forbidden(api, make_conversation, path, seq_field):
    conv = make_conversation()
    r = api("mallory").post(path, {"conversation_id": conv.id, seq_field: 1}, format="json")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


@pytest.mark.parametrize(
    "path,body",
    [
        (DELIVERED, {}),
        (DELIVERED, {"up_to_seq": 1}),
        (DELIVERED, {"conversation_id": "{conv}"}),
        (DELIVERED, {"conversation_id": "{conv}", "up_to_seq": 1, "message_id": "x"}),
        (DELIVERED, {"conversation_id": "{conv}", "up_to_seq": -1}),
        (DELIVERED, {"conversation_id": "{conv}", "up_to_seq": "abc"}),
        (DELIVERED, {"conversation_id": "{conv}", "up_to_seq": True}),
        (DELIVERED, {"conversation_id": ["x"], "up_to_seq": 1}),
        (READ, {"conversation_id": "{conv}"}),
        (READ, {"conversation_id": "{conv}", "last_read_seq": 1, "last_read_message_id": "x"}),
        (READ, {"conversation_id": "{conv}", "last_read_seq": 2**63}),
        (READ, {"conversation_id": "{conv}", "last_read_message_id": ""}),
        (READ, {"conversation_id": "a\x00b", "last_read_seq": 1}),
    ],
)
def test_bad_input_is_400(api, make_conversation, path, body):
    conv = make_conversation()
    body = {k: (conv.id if v == "{conv}" else v) for k, v in body.items()}
    r = api("bob").post(path, body, format="json")
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid"


def test_malformed_json_is_400(api, make_conversation):
    r = api("bob").post(READ, "{not json", content_type="application/json")
    assert r.status_code == 400 and r.json()["code"] == "invalid"


def test_unknown_message_id_is_404(api, make_conversation, send):
    conv = make_conversation()
    elsewhere = send(make_conversation(others=["carol"]))
    r = api("bob").post(READ, {"conversation_id": conv.id, "last_read_message_id": elsewhere.id}, format="json")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_unauthenticated_is_401(client, make_conversation):
    conv = make_conversation()
    r = client.post(READ, {"conversation_id": conv.id, "last_read_seq": 1}, content_type="application/json")
    assert r.status_code == 401


# --- receipts, status, unread --------------------------------------------------------------


def test_direct_conversation_receipts_status_and_unread(api, make_conversation, send):
    conv = make_conversation(type="direct")
    m1, m2 = send(conv), send(conv)
    alice, bob = api("alice"), api("bob")
    assert receipts_of(alice, m1) == {"bob": (None, None)}
    assert statuses(alice, conv) == ["sent", "sent"]
    assert unread(bob, conv) == 2 and unread(alice, conv) == 0

    bob.post(DELIVERED, {"conversation_id": conv.id, "message_id": m1.id}, format="json")
    delivered_1, _ = stamps(conv, "bob")
    assert receipts_of(alice, m1) == {"bob": (delivered_1, None)}
    assert receipts_of(alice, m2) == {"bob": (None, None)}
    assert statuses(alice, conv) == ["delivered", "sent"]

    bob.post(READ, {"conversation_id": conv.id, "last_read_message_id": m2.id}, format="json")
    delivered_2, read_2 = stamps(conv, "bob")
    assert delivered_2 == read_2 and delivered_2 >= delivered_1
    # m1 keeps the time it was first delivered; reading covered both.
    assert receipts_of(alice, m1) == {"bob": (delivered_1, read_2)}
    assert receipts_of(bob, m2) == {"bob": (read_2, read_2)}
    assert statuses(alice, conv) == ["read", "read"]
    assert unread(bob, conv) == 0

    # Bob's own reply is not unread for him, is unread for alice, and his receipts omit him.
    reply = send(conv, "bob")
    assert unread(bob, conv) == 0 and unread(alice, conv) == 1
    assert receipts_of(alice, reply) == {"alice": (None, None)}
    assert statuses(bob, conv) == ["read", "read", "sent"]


def test_group_receipts_and_a_member_who_joined_later(api, make_conversation, send):
    conv = make_conversation(others=["bob", "carol"])
    before = send(conv)
    messaging_services.member_add(tenant="default", actor="alice", conversation_id=conv.id, user_ids=["dave"])
    after = send(conv)
    alice = api("alice")

    # dave joined after `before`: it is history to him, so he is not in its receipts
    # and does not hold back its status.
    assert set(receipts_of(alice, before)) == {"bob", "carol"}
    assert set(receipts_of(alice, after)) == {"bob", "carol", "dave"}
    assert unread(api("dave"), conv) == 1

    api("bob").post(READ, {"conversation_id": conv.id, "last_read_seq": after.seq}, format="json")
    assert statuses(alice, conv) == ["sent", "sent"]  # carol has not even received them
    api("carol").post(DELIVERED, {"conversation_id": conv.id, "up_to_seq": before.seq}, format="json")
    assert statuses(alice, conv) == ["delivered", "sent"]
    api("carol").post(READ, {"conversation_id": conv.id, "last_read_seq": after.seq}, format="json")
    assert statuses(alice, conv) == ["read", "sent"]  # dave still has `after` unread
    api("dave").post(DELIVERED, {"conversation_id": conv.id, "up_to_seq": after.seq}, format="json")
    assert statuses(alice, conv) == ["read", "delivered"]
    api("dave").post(READ, {"conversation_id": conv.id, "last_read_seq": after.seq}, format="json")
    assert statuses(alice, conv) == ["read", "read"]
    assert unread(api("dave"), conv) == 0

    carol_delivered, carol_read = receipts_of(alice, before)["carol"]
    assert carol_delivered is not None and carol_read is not None and carol_delivered <= carol_read


def test_a_stream_counts_once_for_unread(api, make_conversation, send):
    conv = make_conversation()
    messaging_services.message_send(
        tenant="default", sender="alice", conversation_id=conv.id, content="partial", client_msg_id="s1", stream_state="streaming"
    )
    send(conv)
    assert unread(api("bob"), conv) == 2


def test_receipts_of_another_tenants_message_answer_like_missing_ones(api, make_conversation, send):
    theirs = make_conversation(tenant="other", creator="alice", others=["bob"])
    their_message = send(theirs, tenant="other")
    bob = api("bob")
    other = bob.get(f"/api/aiim/receipts/{theirs.id}/{their_message.id}")
    missing = bob.get(f"/api/aiim/receipts/no-such-conversation/{their_message.id}")
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json()

    mine = make_conversation()
    r = bob.get(f"/api/aiim/receipts/{mine.id}/{their_message.id}")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_receipts_for_a_non_member_are_forbidden(api, make_conversation, send):
    conv = make_conversation()
    message = send(conv)
    r = api("mallory").get(f"/api/aiim/receipts/{conv.id}/{message.id}")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


# --- query counts ----------------------------------------------------------------------------


def _populate(make_conversation, send, conversations, messages, members):
    convs = []
    for i in range(conversations):
        conv = make_conversation(others=[f"u{j}" for j in range(members)])
        for k in range(messages):
            send(conv, "alice" if k % 2 else "u0")
        messaging_services.member_add(tenant="default", actor="alice", conversation_id=conv.id, user_ids=[f"late{i}"])
        convs.append(conv)
    return convs


@pytest.mark.parametrize("conversations,messages,members", [(2, 2, 1), (8, 5, 4)])
def test_conversation_list_query_count_is_constant(api, make_conversation, send, django_assert_num_queries, conversations, messages, members):
    _populate(make_conversation, send, conversations, messages, members)
    alice = api("alice")
    # members, last messages and unread counts come in a fixed number of queries
    with django_assert_num_queries(3):
        r = alice.get("/api/aiim/conversations")
    assert r.status_code == 200
    body = r.json()["conversations"]
    assert len(body) == conversations
    assert all(c["unread_count"] == messages - messages // 2 for c in body)
    assert all(c["last_message"]["status"] == "sent" for c in body)


@pytest.mark.parametrize("messages,members", [(3, 1), (40, 6)])
def test_history_with_statuses_query_count_is_constant(api, make_conversation, send, django_assert_num_queries, messages, members):
    (conv,) = _populate(make_conversation, send, 1, messages, members)
    for reader in ["alice", *(f"u{j}" for j in range(members))]:
        api(reader).post(READ, {"conversation_id": conv.id, "last_read_seq": 2}, format="json")
    alice = api("alice")
    with django_assert_num_queries(2):  # the members (which authorize the caller), the page
        r = alice.get(f"/api/aiim/messages/{conv.id}?limit=200")
    got = r.json()["messages"]
    assert len(got) == messages
    assert [m["status"] for m in got[:2]] == ["read", "read"]
    assert all(m["status"] == "sent" for m in got[2:])


@pytest.mark.parametrize("members", [1, 12])
def test_message_receipts_query_count_is_constant(api, make_conversation, send, django_assert_num_queries, members):
    (conv,) = _populate(make_conversation, send, 1, 2, members)
    last = conv.messages.order_by("-seq").first()
    with django_assert_num_queries(3):
        r = api("alice").get(f"/api/aiim/receipts/{conv.id}/{last.id}")
    # everyone but the sender (alice); the member added after the message is omitted
    assert sorted(x["user_id"] for x in r.json()["receipts"]) == sorted(f"u{j}" for j in range(members))


@pytest.mark.parametrize("backlog", [1, 300])
def test_marking_a_backlog_read_costs_the_same_queries_as_one_message(api, make_conversation, django_assert_num_queries, backlog):
    from messaging.models import Message

    conv = make_conversation(others=["bob", "carol"])
    Message.objects.bulk_create(
        [Message(tenant="default", conversation=conv, seq=s, sender_id="alice", content="x") for s in range(1, backlog + 1)]
    )
    conv.last_seq = backlog
    conv.save(update_fields=["last_seq"])
    bob = api("bob")
    # PostgreSQL: one statement (receipts/storage.py). SQLite: member + conversation, two
    # cursor updates, two moves, the unread count for the event, and the savepoint pair of
    # the service's atomic block inside the test's transaction.
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 8):
        r = bob.post(READ, {"conversation_id": conv.id, "last_read_seq": backlog}, format="json")
    assert r.status_code == 204
    assert unread(bob, conv) == 0
