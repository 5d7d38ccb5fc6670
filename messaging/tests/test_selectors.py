"""messages_page's fixed SQL against the ORM: the same Message and Member objects (values,
types, order) for every shape of page, and exactly the ORM path's 404 / 403."""

from __future__ import annotations

import pytest

from aiim_project.core.errors import Forbidden, NotFound
from messaging import selectors
from messaging.models import Member, Message
from messaging.rendering import StatusView

pytestmark = pytest.mark.django_db

FIELDS = [f.attname for f in Message._meta.concrete_fields]


def snapshot(objs) -> list[tuple]:
    return [tuple((getattr(o, a), type(getattr(o, a))) for a in [f.attname for f in type(o)._meta.concrete_fields]) for o in objs]


@pytest.fixture
def conv(make_conversation, send):
    c = make_conversation("alice", ["bob", "carol"], type="group")
    for i in range(12):
        send(
            c,
            "bob" if i % 3 else "alice",
            {"text": f"m{i}", "n": i, "f": 1.5, "nested": [None, True, {"k": "é"}]} if i % 2 else f"plain {i}",
            client_msg_id=f"c{i}" if i % 4 else None,
            metadata={"i": i} if i % 5 == 0 else None,
        )
    Message.objects.filter(conversation=c, seq=3).update(stream_state="completed", stream_chunk_count=4)
    return c


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({}, list(range(1, 13))),
        ({"limit": 5}, list(range(8, 13))),
        ({"after_seq": 4, "limit": 3}, [5, 6, 7]),
        ({"after_seq": 10}, [11, 12]),
        ({"before_seq": 6, "limit": 2}, [4, 5]),
        ({"before_seq": 1}, []),
        ({"after_seq": 2, "before_seq": 9, "limit": 4}, [3, 4, 5, 6]),
    ],
)
def test_pages_are_the_orm_s_objects(conv, kw, expected):
    page = selectors.messages_page(tenant="default", user_id="carol", conversation_id=conv.id, **kw)
    assert [m.seq for m in page.messages] == expected
    by_orm = {m.seq: m for m in Message.objects.filter(conversation=conv)}
    assert snapshot(page.messages) == snapshot([by_orm[s] for s in expected])
    assert all(m._state.adding is False and m._state.db == "default" for m in page.messages)
    limit = kw.get("limit", 50)
    lo, hi = kw.get("after_seq", 0), kw.get("before_seq", 13)
    assert page.has_more == (len([s for s in range(1, 13) if lo < s < hi]) > limit)
    assert snapshot(page.members) == snapshot(Member.objects.filter(conversation=conv).order_by("joined_at", "id"))


def test_before_id_pages_back_from_that_message(conv):
    anchor = Message.objects.get(conversation=conv, seq=7)
    page = selectors.messages_page(tenant="default", user_id="alice", conversation_id=conv.id, before_id=anchor.id, limit=3)
    assert [m.seq for m in page.messages] == [4, 5, 6] and page.has_more


def test_not_a_member_missing_and_another_tenant_s(conv, make_conversation):
    with pytest.raises(Forbidden):
        selectors.messages_page(tenant="default", user_id="dave", conversation_id=conv.id)
    with pytest.raises(NotFound):
        selectors.messages_page(tenant="default", user_id="alice", conversation_id="nope")
    with pytest.raises(NotFound):  # alice of tenant "other" asking for tenant default's conversation
        selectors.messages_page(tenant="other", user_id="alice", conversation_id=conv.id)
    empty = make_conversation("alice", ["bob"], type="group")
    Member.objects.filter(conversation=empty).delete()
    with pytest.raises(Forbidden):  # exists in the tenant, no members at all
        selectors.messages_page(tenant="default", user_id="alice", conversation_id=empty.id)


def test_a_member_added_between_the_two_reads_is_let_in(conv, monkeypatch):
    real = selectors.conversation_for_member

    def add_then_check(**kw):
        Member.objects.create(tenant="default", conversation=conv, user_id="dave")
        return real(**kw)

    monkeypatch.setattr(selectors, "conversation_for_member", add_then_check)
    page = selectors.messages_page(tenant="default", user_id="dave", conversation_id=conv.id)
    assert "dave" in [m.user_id for m in page.members] and len(page.messages) == 12


def test_member_cursors_are_what_a_status_reads_of_each_member(make_conversation, send, django_assert_num_queries):
    group = make_conversation("alice", ["bob"], type="group")
    other = make_conversation("carol", ["dave"], type="group")
    send(group, sender="alice", content="one")
    Member.objects.filter(conversation=group, user_id="bob").update(read_seq=1, delivered_seq=1)
    expected = {(m.user_id, m.joined_seq, m.read_seq, m.delivered_seq) for m in Member.objects.filter(conversation=group)}

    with django_assert_num_queries(1):
        rows = selectors.member_cursors(group.id)
    assert {(r.user_id, r.joined_seq, r.read_seq, r.delivered_seq) for r in rows} == expected
    with django_assert_num_queries(1):
        grouped = selectors.cursors_by_conversation([group.id, other.id])
    assert {c: sorted(r.user_id for r in rs) for c, rs in grouped.items()} == {group.id: ["alice", "bob"], other.id: ["carol", "dave"]}
    assert StatusView(rows).status(Message.objects.get(conversation=group, seq=1)) == "read"
