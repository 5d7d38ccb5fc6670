"""Message status as the sender sees it, checked against its definition."""

from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.models import Member, Message
from messaging.rendering import StatusView


def by_definition(members, message):
    """Delivered / read by every member but the sender who had joined before the message."""
    others = [m for m in members if m.user_id != message.sender_id and m.joined_seq < message.seq]
    if not others:
        return "sent"
    if all(m.read_seq >= message.seq for m in others):
        return "read"
    if all(m.delivered_seq >= message.seq for m in others):
        return "delivered"
    return "sent"


@st.composite
def member(draw, user_id):
    joined = draw(st.integers(0, 30))
    read = draw(st.integers(joined, 40))
    delivered = draw(st.integers(read, 40))
    return Member(user_id=user_id, joined_seq=joined, read_seq=read, delivered_seq=delivered)


@st.composite
def conversation(draw):
    count = draw(st.integers(0, 8))
    members = [draw(member(f"u{i}")) for i in range(count)]
    # Senders include users who have left (no longer members).
    senders = st.sampled_from([m.user_id for m in members] + ["gone"])
    messages = [Message(seq=s, sender_id=draw(senders)) for s in range(1, draw(st.integers(1, 40)) + 1)]
    return members, messages


@settings(max_examples=300, deadline=None)
@given(conversation())
def test_status_matches_its_definition(case):
    members, messages = case
    view = StatusView(members)
    assert [view.status(m) for m in messages] == [by_definition(members, m) for m in messages]


def test_a_member_who_joined_later_does_not_hold_back_older_messages():
    members = [
        Member(user_id="alice", joined_seq=0, read_seq=0, delivered_seq=0),
        Member(user_id="bob", joined_seq=0, read_seq=2, delivered_seq=3),
        Member(user_id="dave", joined_seq=2, read_seq=2, delivered_seq=3),
    ]
    view = StatusView(members)
    assert [view.status(Message(seq=s, sender_id="alice")) for s in (1, 2, 3, 4)] == ["read", "read", "delivered", "sent"]
