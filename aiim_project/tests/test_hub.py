"""The process hub (aiim_project.gateway.hub) on the real channel layer of the run (in-memory
embedded, Redis pub/sub on the production settings): an event published on this loop reaches
this loop's connections at once and exactly once, and other processes through the layer."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import get_channel_layer

from aiim_project.core import events
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
