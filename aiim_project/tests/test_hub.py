"""The process hub (aiim_project.gateway.hub) on the real channel layer of the run (in-memory
embedded, Redis pub/sub on the production settings): an event published on this loop reaches
this loop's connections at once and exactly once, and other processes through the layer."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import get_channel_layer

from aiim_project.core import events
from aiim_project.core import redis as aiim_redis
from aiim_project.gateway import fanout_lag
from aiim_project.gateway.hub import Hub, get_hub

LAYER_WAIT = 0.5


class Collector:
    """Stands in for a connection: keeps what the hub hands it."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def hub_event(self, message: dict, wire) -> int:
        self.frames.append(wire.text)
        return 1

    def hub_resync(self) -> None:
        pass


def typing_event(conversation_id: str) -> dict:
    # No seq: a duplicate would not be hidden by a subscription's seq order.
    return events.build(conversation_id, "typing", {"user_id": "alice", "state": "typing"})


async def wait_for(predicate, timeout: float = LAYER_WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


async def test_an_event_of_this_loop_reaches_its_members_at_once_and_other_processes_by_the_layer():
    conversation_id = uuid.uuid4().hex
    group = events.conversation_group("default", conversation_id)
    # A second hub on the same layer plays another process. It starts first: the hub that
    # starts last is the one this loop's publishes hand their events to.
    remote_hub, remote = Hub(get_channel_layer()), Collector()
    await remote_hub.join(group, remote)
    local_hub, local = get_hub(), Collector()
    await local_hub.join(group, local)
    try:
        event = typing_event(conversation_id)
        events.publish_all_now([([group], event)])
        # Handed over synchronously: no await, no channel layer in between.
        assert local.frames == [event["frame"]]
        await wait_for(lambda: remote.frames)
        assert remote.frames == [event["frame"]]
        # The layer has brought the local hub its own copy back by now; it was dropped.
        await asyncio.sleep(0.1)
        assert local.frames == [event["frame"]]
    finally:
        await local_hub.leave(group, local)
        await remote_hub.leave(group, remote)
        remote_hub._task.cancel()


async def test_an_event_from_another_process_reaches_the_local_members_once():
    conversation_id = uuid.uuid4().hex
    group = events.conversation_group("default", conversation_id)
    hub, member = get_hub(), Collector()
    await hub.join(group, member)
    try:
        event = typing_event(conversation_id)
        await events.group_send(group, {**event, "origin": "aiim.hub.another-process"})
        await wait_for(lambda: member.frames)
        await asyncio.sleep(0.1)
        assert member.frames == [event["frame"]]
    finally:
        await hub.leave(group, member)


@pytest.mark.parametrize("groups", [1, 2])
async def test_a_local_event_sent_to_several_groups_reaches_each_group_once(groups):
    conversation_id = uuid.uuid4().hex
    names = [events.conversation_group("default", conversation_id), events.user_group("default", uuid.uuid4().hex)][:groups]
    hub = get_hub()
    members = [Collector() for _ in names]
    for name, member in zip(names, members):
        await hub.join(name, member)
    try:
        event = typing_event(conversation_id)
        events.publish_all_now([(names, event)])
        await asyncio.sleep(0.2)
        assert [m.frames for m in members] == [[event["frame"]]] * groups
    finally:
        for name, member in zip(names, members):
            await hub.leave(name, member)


async def test_the_fanout_lag_is_read_from_the_layer_s_copy_not_from_the_hand_over():
    """A local hand-over is never behind: a reading from it would hide the layer's queue,
    which this process's own copies wait in alongside the other processes' events."""
    conversation_id = uuid.uuid4().hex
    group = events.conversation_group("default", conversation_id)
    hub, member = get_hub(), Collector()
    await hub.join(group, member)
    observe = fanout_lag.LAG.observe
    readings: list[float] = []
    fanout_lag.LAG.observe = lambda committed_at: readings.append(committed_at)
    try:
        event = typing_event(conversation_id)
        events.publish_all_now([([group], event)])
        assert member.frames == [event["frame"]] and readings == []
        await wait_for(lambda: readings)
        assert readings == [event["committed_at"]]
    finally:
        fanout_lag.LAG.observe = observe
        await hub.leave(group, member)


def redis_subscribes() -> int | None:
    """SUBSCRIBE commands the test's Redis has run (None on the embedded pass)."""
    client = aiim_redis.sync_client()
    if client is None:
        return None
    return client.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0)


def redis_subscribers(group: str) -> int | None:
    """Subscriptions Redis holds for `group`'s channel (None on the embedded pass)."""
    client = aiim_redis.sync_client()
    if client is None:
        return None
    return sum(int(n) for _, n in client.pubsub_numsub(*client.pubsub_channels(f"*{group}")))


async def subscribers_settle_at(group: str, expected: int) -> int | None:
    """`redis_subscribers(group)` once Redis has run the commands written so far (a join or
    leave returns when its command is written), or after 2 s."""
    await wait_for(lambda: redis_subscribers(group) in (None, expected), timeout=2)
    return redis_subscribers(group)


async def test_groups_joined_at_once_share_one_subscribe_and_each_gets_its_events():
    """A storm of connects joins hundreds of groups; one SUBSCRIBE per batch, not one each."""
    hub, started = get_hub(), events.user_group("default", uuid.uuid4().hex)
    await hub.join(started, Collector())  # the hub is started, its SUBSCRIBE counted
    await wait_for(lambda: redis_subscribers(started) in (None, 1), timeout=2)
    groups = [events.user_group("default", uuid.uuid4().hex) for _ in range(40)]
    members = [Collector() for _ in groups]
    before = redis_subscribes()
    await asyncio.gather(*(hub.join(g, m) for g, m in zip(groups, members)))
    try:
        if before is not None:
            # The SUBSCRIBE is written when join returns; Redis counts it once it has run it.
            await wait_for(lambda: all(redis_subscribers(g) == 1 for g in groups), timeout=2)
            assert redis_subscribes() - before == 1
        for group in groups:
            await events.group_send(group, {**typing_event("c"), "origin": "aiim.hub.another-process"})
        await wait_for(lambda: all(m.frames for m in members))
        assert [len(m.frames) for m in members] == [1] * len(groups)
    finally:
        await asyncio.gather(*(hub.leave(g, m) for g, m in zip(groups, members)))


async def test_a_group_left_and_joined_again_at_once_stays_in_the_layer():
    """The layer's discard and the next add of one group keep their order."""
    conversation_id = uuid.uuid4().hex
    group = events.conversation_group("default", conversation_id)
    hub, first, second = get_hub(), Collector(), Collector()
    await hub.join(group, first)
    await asyncio.gather(hub.leave(group, first), hub.join(group, second))
    try:
        assert await subscribers_settle_at(group, 1) in (None, 1)
        event = typing_event(conversation_id)
        await events.group_send(group, {**event, "origin": "aiim.hub.another-process"})
        await wait_for(lambda: second.frames)
        assert second.frames == [event["frame"]] and first.frames == []
    finally:
        await hub.leave(group, second)


async def test_the_last_member_leaving_takes_the_group_out_of_the_layer():
    conversation_id = uuid.uuid4().hex
    group = events.conversation_group("default", conversation_id)
    hub, members = get_hub(), [Collector(), Collector()]
    await asyncio.gather(*(hub.join(group, m) for m in members))
    assert await subscribers_settle_at(group, 1) in (None, 1)
    await hub.leave(group, members[0])
    await asyncio.sleep(0.05)
    assert redis_subscribers(group) in (None, 1)
    await hub.leave(group, members[1])
    assert await subscribers_settle_at(group, 0) in (None, 0)
    await events.group_send(group, {**typing_event(conversation_id), "origin": "aiim.hub.another-process"})
    await asyncio.sleep(0.2)
    assert [m.frames for m in members] == [[], []]


@pytest.mark.redis
async def test_a_join_says_true_only_once_redis_has_confirmed_the_group():
    """True lets a subscription skip its tail check: it must never be true for a group whose
    SUBSCRIBE Redis has not answered, e.g. one dropped and asked for again."""
    group = events.conversation_group("default", uuid.uuid4().hex)
    hub, first, second, third = get_hub(), Collector(), Collector(), Collector()
    await hub.join(group, first)
    await wait_for(lambda: hub.layer.group_confirmed(group), timeout=2)
    assert await hub.join(group, second) is True
    await hub.leave(group, first)
    await hub.leave(group, second)
    assert hub.layer.group_confirmed(group) is False  # dropped: unconfirmed at once
    rejoined = await hub.join(group, third)
    assert rejoined is False or await subscribers_settle_at(group, 1) == 1
    await wait_for(lambda: hub.layer.group_confirmed(group), timeout=2)
    assert await subscribers_settle_at(group, 1) == 1
    await hub.leave(group, third)
