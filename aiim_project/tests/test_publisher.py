"""The ordered publisher (aiim_project.core.events) on the real channel layer of the run
(in-memory embedded, Redis pub/sub on the production settings): events handed over while a
publish is in flight go out together as the next batch (one pipeline on Redis), every
conversation's events stay in hand-over order, and each event's commit-to-publish lag is
recorded."""

from __future__ import annotations

import asyncio
import time
import uuid

from channels.layers import get_channel_layer

from aiim_project.core import events
from aiim_project.core.metrics import PUBLISH_LAG_SECONDS


def _lag_count() -> float:
    return next(s.value for m in PUBLISH_LAG_SECONDS.collect() for s in m.samples if s.name.endswith("_count"))


async def _receive(layer, channel: str, n: int, timeout: float = 5.0) -> list[dict]:
    got = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.append(await layer.receive(channel))
    return got


async def test_concurrent_commits_are_batched_and_each_conversation_keeps_its_order(monkeypatch):
    layer = get_channel_layer()
    conversations = [uuid.uuid4().hex for _ in range(3)]
    groups = [events.conversation_group("default", c) for c in conversations]
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    batches: list[int] = []
    send_all = events._group_send_all

    async def recording(batch):
        batches.append(len(batch))
        await send_all(batch)

    monkeypatch.setattr(events, "_group_send_all", recording)
    count0 = _lag_count()
    loop = asyncio.get_running_loop()
    try:
        # 60 commits of 3 conversations, handed over back to back as the server's loop gets
        # them from worker threads; the first publish is in flight while the rest queue.
        for seq in range(1, 21):
            for c, group in zip(conversations, groups):
                event = events.build(c, "message.created", {"seq": seq}, seq=seq)
                event["committed_at"] = time.time()
                events._hand_over(loop, [([group], event)])
                if seq == 1 and c == conversations[0]:
                    await asyncio.sleep(0)  # the publisher starts on the first commit
        got = await _receive(layer, channel, 60)
        publishing = events._publishers.get(loop).task
        if publishing is not None:  # the in-memory layer delivers before the batch is done
            await publishing
    finally:
        for group in groups:
            await layer.group_discard(group, channel)
    assert {c: [m["seq"] for m in got if m["conversation_id"] == c] for c in conversations} == {
        c: list(range(1, 21)) for c in conversations
    }
    assert all(m["group"] == events.conversation_group("default", m["conversation_id"]) for m in got)
    assert batches == [1, 59]
    assert _lag_count() - count0 == 60


async def test_one_commit_to_many_groups_reaches_each_group_in_order():
    """A 50-member conversation's creation: its events to 50 user groups in one pipeline."""
    layer = get_channel_layer()
    conversation = uuid.uuid4().hex
    users = [f"u{k}" for k in range(50)]
    channel = await layer.new_channel()
    user_groups = [events.user_group("default", u) for u in users]
    for group in user_groups:
        await layer.group_add(group, channel)
    try:
        batch = [
            ([events.conversation_group("default", conversation), group], events.build(conversation, "member.joined", {"user_id": u}, user_id=u))
            for u, group in zip(users, user_groups)
        ]
        events.publish_all_now(batch)
        got = await _receive(layer, channel, 50)
    finally:
        for group in user_groups:
            await layer.group_discard(group, channel)
    assert [m["user_id"] for m in got] == users
