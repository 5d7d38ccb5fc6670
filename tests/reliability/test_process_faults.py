"""One of two Daphne processes is SIGKILLed under load. Clients fail over to the other and
resume: no acknowledged message is lost, none is delivered twice or out of order."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from messaging.models import Message
from tests.support.http import ahttp

from .support import ResumingSubscriber

# Two processes share events only through Redis: the in-memory layer of the embedded mode
# is per process.
pytestmark = [pytest.mark.redis, pytest.mark.e2e]

SENDERS = ("alice", "bob", "carol")


async def failover_sender(user: str, servers, token: str, conversation_id: str, stop: asyncio.Event, acked: dict, errors: list) -> None:
    """REST sends; a send whose server died is retried on the next server with the same
    client_msg_id, so it is stored once whether or not the dead server had committed it."""
    alive = itertools.cycle(servers)
    for n in itertools.count():
        if stop.is_set():
            return
        client_msg_id = f"{user}-{n}"
        for _ in range(50):
            server = next(alive)
            try:
                reply = await ahttp(server.url, "POST", "/api/aiim/messages", token,
                                    {"conversation_id": conversation_id, "content": f"{user} {n}", "client_msg_id": client_msg_id}, timeout=10)
            except OSError:
                continue
            if reply.status in (200, 201):
                acked[client_msg_id] = reply.body["message"]["seq"]
                break
            errors.append((reply.status, reply.body))
            await asyncio.sleep(0.1)
        else:
            errors.append(("gave up", client_msg_id))
            return


def test_sigkill_one_of_two_daphnes_under_load(daphne, make_conversation, token):
    conversation = make_conversation("alice", others=("bob", "carol", "dave", "erin"))
    doomed, survivor = daphne(2)
    # dave starts on the process that will die, erin on the one that lives.
    dave = ResumingSubscriber([doomed, survivor], token("dave"), conversation.id)
    erin = ResumingSubscriber([survivor, doomed], token("erin"), conversation.id)
    acked: dict[str, int] = {}
    errors: list = []

    async def scenario():
        stop_subs, stop_send = asyncio.Event(), asyncio.Event()
        subs = [asyncio.create_task(s.run(stop_subs)) for s in (dave, erin)]
        await asyncio.sleep(0.5)
        senders = [
            asyncio.create_task(failover_sender(u, [doomed, survivor], token(u), conversation.id, stop_send, acked, errors))
            for u in SENDERS
        ]
        await asyncio.sleep(1.5)
        await asyncio.to_thread(doomed.kill)
        await asyncio.sleep(2.0)
        stop_send.set()
        await asyncio.wait_for(asyncio.gather(*senders), 30)
        everything = set(acked.values())
        caught_up = [await s.wait_for(everything, 15) for s in (dave, erin)]
        stop_subs.set()
        await asyncio.wait_for(asyncio.gather(*subs), 15)
        return caught_up

    caught_up = asyncio.run(scenario())
    assert not errors, errors[:5]
    stored = dict(Message.objects.filter(conversation_id=conversation.id).values_list("client_msg_id", "seq"))
    # Every acked message is stored once, with the acked seq.
    assert {c: stored.get(c) for c in acked} == acked
    assert len(stored) == len(acked)
    print(f"sigkill: {len(acked)} acked; dave reconnected {dave.reconnects}x, erin {erin.reconnects}x")
    assert dave.reconnects >= 1, "dave's server died but he never reconnected"
    for subscriber, ok in zip((dave, erin), caught_up):
        assert not subscriber.violations, subscriber.violations[:5]
        assert ok, sorted(set(stored.values()) - set(subscriber.seqs))[:10]
        assert subscriber.seqs == sorted(stored.values())
