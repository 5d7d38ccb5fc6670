"""Redis dies (restarts empty) or is flushed while three clients send through two Daphne
processes, while two clients (one per process) follow the conversation over WebSocket.
Redis holds the seq counters and carries the events, so this is the fault that could reuse a
seq or silently stop live delivery."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import pytest

from messaging.models import Conversation, Message
from tests.support.http import ahttp
from tests.support.redis_server import RedisServer

from .support import ResumingSubscriber

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

SENDERS = ("alice", "bob", "carol")


@dataclass
class SendLog:
    acked: list[tuple[str, int, str]] = field(default_factory=list)  # (sender, seq, client_msg_id), in ack order
    unavailable: int = 0
    other: list[tuple[int, object]] = field(default_factory=list)
    slowest: float = 0.0


async def sender(user: str, servers, token: str, conversation_id: str, stop: asyncio.Event, log: SendLog) -> None:
    """Sends until told to stop; a 503 is retried with the same client_msg_id (the
    idempotency key must make the retry safe)."""
    rotation = itertools.cycle(servers)
    for n in itertools.count():
        if stop.is_set():
            return
        client_msg_id = f"{user}-{n}"
        while True:
            server = next(rotation)
            reply = await ahttp(
                server.url, "POST", "/api/aiim/messages", token,
                {"conversation_id": conversation_id, "content": f"{user} {n}", "client_msg_id": client_msg_id},
            )
            log.slowest = max(log.slowest, reply.elapsed)
            if reply.status in (200, 201):
                log.acked.append((user, reply.body["message"]["seq"], client_msg_id))
                break
            if reply.status == 503 and reply.body.get("code") == "unavailable" and "retry-after" in reply.headers:
                log.unavailable += 1
                await asyncio.sleep(0.05)
                continue
            log.other.append((reply.status, reply.body))
            return


def check_consistent(conversation_id: str, log: SendLog, fault_at: int) -> None:
    assert not log.other, log.other[:5]
    assert log.slowest < 10, f"a send hung for {log.slowest:.1f}s"
    stored = {m.client_msg_id: m.seq for m in Message.objects.filter(conversation_id=conversation_id)}
    # Every acked message is stored with the seq it was acked with, once.
    for user, seq, client_msg_id in log.acked:
        assert stored.get(client_msg_id) == seq, (client_msg_id, seq, stored.get(client_msg_id))
    assert len(stored) == len({c for _, _, c in log.acked})
    seqs = list(stored.values())
    assert len(seqs) == len(set(seqs))
    # Each sender's acks come back in strictly increasing seq, across the fault too.
    for user in SENDERS:
        mine = [seq for u, seq, _ in log.acked if u == user]
        assert mine == sorted(mine) and len(mine) == len(set(mine)), (user, mine)
    # Seq order is commit order, across the fault: a counter that came back empty was
    # re-floored from the database instead of handing out old numbers again.
    by_seq = list(Message.objects.filter(conversation_id=conversation_id).order_by("seq").values_list("created_at", flat=True))
    assert by_seq == sorted(by_seq)
    assert len(log.acked) > fault_at, "no message was acked after the fault"
    assert Conversation.objects.get(id=conversation_id).last_seq == max(seqs)


def assert_no_seq_collision(servers) -> None:
    """The unique constraint is only the last line of defence: the counter itself must
    never hand out a stored seq again."""
    for server in servers:
        assert "seq collision" not in server.log_path.read_text()


def run_load(servers, token, conversation_id: str, fault, settle: float = 1.5):
    """Three senders and two subscribers (one per server) around `fault`; returns the send
    log, the index of the first ack after the fault, and the subscribers once they caught
    up (or gave up waiting)."""
    subscribers = [
        ResumingSubscriber(servers, token("dave"), conversation_id),
        ResumingSubscriber(servers[::-1], token("erin"), conversation_id),
    ]

    async def scenario():
        log, stop, stop_subs = SendLog(), asyncio.Event(), asyncio.Event()
        subs = [asyncio.create_task(s.run(stop_subs)) for s in subscribers]
        await asyncio.sleep(0.5)
        tasks = [asyncio.create_task(sender(u, servers, token(u), conversation_id, stop, log)) for u in SENDERS]
        await asyncio.sleep(settle)
        fault_at = len(log.acked)
        await asyncio.to_thread(fault)
        await asyncio.sleep(settle)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        everything = {seq for _, seq, _ in log.acked}
        caught_up = [await s.wait_for(everything, 15) for s in subscribers]
        stop_subs.set()
        await asyncio.wait_for(asyncio.gather(*subs), 15)
        return log, fault_at, caught_up

    log, fault_at, caught_up = asyncio.run(scenario())
    return log, fault_at, list(zip(subscribers, caught_up))


def check_subscribers(conversation_id: str, subscribers) -> None:
    stored = sorted(Message.objects.filter(conversation_id=conversation_id).values_list("seq", flat=True))
    for subscriber, caught_up in subscribers:
        assert not subscriber.violations, subscriber.violations[:5]
        assert caught_up, f"missing {sorted(set(stored) - set(subscriber.seqs))[:10]} (reconnects: {subscriber.reconnects})"
        assert subscriber.seqs == stored


def test_redis_restart_empty_under_load(daphne, redis_server: RedisServer, make_conversation, token):
    conversation = make_conversation("alice", others=("bob", "carol", "dave", "erin"))
    servers = daphne(2, REDIS_URL=redis_server.url)

    def outage():
        redis_server.kill()
        time.sleep(0.8)
        redis_server.start()

    log, fault_at, subscribers = run_load(servers, token, conversation.id, outage)
    assert log.unavailable > 0, "no send met the outage: the fault was not exercised"
    check_consistent(conversation.id, log, fault_at)
    assert_no_seq_collision(servers)
    check_subscribers(conversation.id, subscribers)
    print(
        f"redis restart: {len(log.acked)} acked, {log.unavailable} x 503, slowest {log.slowest:.2f}s, "
        f"subscriber reconnects {[s.reconnects for s, _ in subscribers]}"
    )
    # The counter came back empty and was re-floored from the database, not from 0.
    assert int(redis_server.client().get(f"aiim:seq:{conversation.id}")) >= max(s for _, s, _ in log.acked)


def test_redis_flushdb_under_load(daphne, redis_server: RedisServer, make_conversation, token):
    conversation = make_conversation("alice", others=("bob", "carol", "dave", "erin"))
    servers = daphne(2, REDIS_URL=redis_server.url)

    log, fault_at, subscribers = run_load(servers, token, conversation.id, lambda: redis_server.client().flushdb())
    check_consistent(conversation.id, log, fault_at)
    assert_no_seq_collision(servers)
    check_subscribers(conversation.id, subscribers)
    print(f"redis flushdb: {len(log.acked)} acked, {log.unavailable} x 503, slowest {log.slowest:.2f}s")


def test_last_message_after_a_redis_restart_reaches_subscribers(daphne, redis_server: RedisServer, make_conversation, token):
    """The newest message has no later event to reveal a lost one: sent the moment Redis is
    back, while the servers' pub/sub connections may still be re-subscribing, it must
    still reach both subscribers without anyone sending again."""
    conversation = make_conversation("alice", others=("dave", "erin"))
    servers = daphne(2, REDIS_URL=redis_server.url)
    subscribers = [
        ResumingSubscriber(servers, token("dave"), conversation.id),
        ResumingSubscriber(servers[::-1], token("erin"), conversation.id),
    ]

    async def scenario():
        stop = asyncio.Event()
        subs = [asyncio.create_task(s.run(stop)) for s in subscribers]
        first = await ahttp(servers[0].url, "POST", "/api/aiim/messages", token("alice"), {"conversation_id": conversation.id, "content": "before"})
        assert first.status == 201
        assert all([await s.wait_for({first.body["message"]["seq"]}, 10) for s in subscribers])
        await asyncio.to_thread(redis_server.restart)
        while True:
            last = await ahttp(servers[1].url, "POST", "/api/aiim/messages", token("alice"), {"conversation_id": conversation.id, "content": "after", "client_msg_id": "after"})
            if last.status in (200, 201):
                break
            assert last.status == 503, last.body
            await asyncio.sleep(0.02)
        got = [await s.wait_for({last.body["message"]["seq"]}, 10) for s in subscribers]
        stop.set()
        await asyncio.wait_for(asyncio.gather(*subs), 15)
        return got

    assert asyncio.run(scenario()) == [True, True]
