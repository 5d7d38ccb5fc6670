"""OrderedDelivery against adversarial event streams: reordered, duplicated, lost, failed.

The fake database holds every committed message; events are the channel layer's hints.
The facts the class relies on hold here by construction: an event exists only for a
committed seq, and every seq below it is already final in the fake database.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from aiim_project.gateway import delivery
from aiim_project.gateway.delivery import OrderedDelivery, StoredMessage

GAP = 0.002


def created(seq: int, *, stream: dict | None = None) -> dict:
    return {
        "type": "aiim.event",
        "conversation_id": "c",
        "event": "message.created",
        "seq": seq,
        "frame": f"m{seq}",
        "message_id": f"id{seq}",
        "stream": stream,
    }


def chunk(seq: int, first: int, last: int | None = None) -> dict:
    last = first if last is None else last
    return {
        "type": "aiim.event",
        "conversation_id": "c",
        "event": "message.stream_chunk",
        "seq": seq,
        "message_id": f"id{seq}",
        "chunk_index": first,
        "last_chunk_index": last,
        "frame": f"c{seq}:{first}-{last}",
    }


def updated(seq: int, state: str, chunk_count: int = 0) -> dict:
    return {
        "type": "aiim.event",
        "conversation_id": "c",
        "event": "message.updated",
        "seq": seq,
        "message_id": f"id{seq}",
        "frame": '{"data":{"message":{"stream":{"state":"%s","chunk_count":%d}}},"tag":"u%d"}' % (state, chunk_count, seq),
    }


class FakeDB:
    def __init__(self, rows: dict[int, StoredMessage] | None = None):
        self.rows = rows or {}
        self.reads: list[tuple[int, int]] = []
        self.fail_next = 0

    def add(self, seq: int, *, state: str | None = None, chunks: int = 0) -> None:
        self.rows[seq] = StoredMessage(seq, f"id{seq}", f"m{seq}", state, chunks)

    async def load(self, after: int, up_to: int, limit: int) -> list[StoredMessage]:
        self.reads.append((after, up_to))
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("database down")
        return [self.rows[s] for s in sorted(self.rows) if after < s <= up_to][:limit]


class Sink:
    def __init__(self):
        self.frames: list[str] = []

    def send(self, frame: str) -> None:
        self.frames.append(frame)


async def settle(sink: Sink, expected_len: int, timeout: float = 5.0) -> None:
    """Wait until the sink has expected_len frames, then a little longer to catch extras."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(sink.frames) < expected_len and loop.time() < deadline:
        await asyncio.sleep(0.001)
    await asyncio.sleep(GAP * 5)


def make(db: FakeDB, sink: Sink, next_seq: int = 1, load_chunks=None) -> OrderedDelivery:
    return OrderedDelivery(send=sink.send, load=db.load, next_seq=next_seq, gap_wait=GAP, load_chunks=load_chunks)


async def stream_started(load_chunks=None) -> tuple[OrderedDelivery, Sink]:
    """A subscription that has sent message 1, a stream with no chunk yet."""
    db, sink = FakeDB(), Sink()
    d = make(db, sink, load_chunks=load_chunks)
    db.add(1, state="streaming")
    await d.on_event(created(1, stream=streaming(0)))
    return d, sink


async def test_in_order_events_go_straight_through_without_reads():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    for s in range(1, 6):
        db.add(s)
        await d.on_event(created(s))
    assert sink.frames == [f"m{s}" for s in range(1, 6)]
    assert db.reads == []


async def test_duplicates_and_old_seqs_are_dropped():
    db, sink = FakeDB(), Sink()
    d = make(db, sink, next_seq=4)
    for s in (1, 3, 4, 4, 5, 4, 5):
        db.add(s)
        await d.on_event(created(s))
    assert sink.frames == ["m4", "m5"]


async def test_early_seq_waits_for_the_missing_event_without_a_read():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    for s in (1, 2, 3):
        db.add(s)
    await d.on_event(created(2))
    await d.on_event(created(3))
    assert sink.frames == []
    await d.on_event(created(1))
    await settle(sink, 3)
    assert sink.frames == ["m1", "m2", "m3"]
    assert db.reads == []


async def test_lost_event_is_filled_from_the_database():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    for s in (1, 2, 3):
        db.add(s)
    await d.on_event(created(1))
    await d.on_event(created(3))  # the event for 2 is lost
    await settle(sink, 3)
    assert sink.frames == ["m1", "m2", "m3"]
    assert db.reads == [(1, 3)]


async def test_failed_send_leaves_a_gap_that_is_skipped_not_waited_on():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    db.add(1)
    db.add(3)  # seq 2 was allocated, then the send failed: no row, no event
    await d.on_event(created(1))
    await d.on_event(created(3))
    await settle(sink, 2)
    assert sink.frames == ["m1", "m3"]
    assert d.next_seq == 4
    db.add(4)
    await d.on_event(created(4))
    assert sink.frames == ["m1", "m3", "m4"]


async def test_database_down_during_gap_fill_retries_and_loses_nothing(monkeypatch):
    monkeypatch.setattr(delivery, "RETRY_SECONDS", 0.01)
    db, sink = FakeDB(), Sink()
    db.fail_next = 2
    d = make(db, sink)
    for s in (1, 2, 3):
        db.add(s)
    await d.on_event(created(3))
    await settle(sink, 3)
    assert sink.frames == ["m1", "m2", "m3"]
    assert len(db.reads) == 3


async def test_long_gap_is_read_in_pages(monkeypatch):
    monkeypatch.setattr(delivery, "GAP_READ_LIMIT", 7)
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    for s in range(1, 31):
        if s % 5:
            db.add(s)  # every fifth send failed
    await d.on_event(created(29))
    await settle(sink, 24)
    assert sink.frames == [f"m{s}" for s in range(1, 30) if s % 5]
    assert d.next_seq == 30


async def test_check_tail_sends_what_committed_without_an_event():
    db, sink = FakeDB(), Sink()
    d = make(db, sink, next_seq=3)
    for s in (1, 2, 3, 4):
        db.add(s)
    await d.check_tail()
    assert sink.frames == ["m3", "m4"]
    await d.on_event(created(4))  # its event arrives late: a duplicate
    db.add(5)
    db.add(6)
    await d.on_event(created(6))  # the event for 5 is lost
    await settle(sink, 4)
    assert sink.frames == ["m3", "m4", "m5", "m6"]


async def test_replay_then_live_without_gap_or_duplicate():
    db, sink = FakeDB(), Sink()
    for s in range(1, 8):
        db.add(s)
    d = make(db, sink, next_seq=3)
    await d.replay([db.rows[s] for s in (3, 4, 5)])
    for s in (4, 5, 6, 7):
        await d.on_event(created(s))
    assert sink.frames == ["m3", "m4", "m5", "m6", "m7"]


@pytest.mark.parametrize("seed", range(40))
async def test_random_permutations_duplicates_losses_and_failures(seed):
    rng = random.Random(seed)
    n = rng.randint(20, 120)
    db, sink = FakeDB(), Sink()
    start = rng.randint(1, 5)
    committed = [s for s in range(1, n + 1) if rng.random() > 0.1]
    for s in committed:
        db.add(s)
    # Some events lost (never the newest: a lost newest event waits for the next one or the
    # tail check), some duplicated, then all shuffled.
    events = [created(s) for s in committed if s == committed[-1] or rng.random() > 0.2]
    events += [created(rng.choice(committed)) for _ in range(n // 4)]
    rng.shuffle(events)
    d = make(db, sink, next_seq=start)
    for event in events:
        await d.on_event(event)
        if rng.random() < 0.1:
            await asyncio.sleep(GAP * rng.random() * 2)
    expected = [f"m{s}" for s in committed if s >= start]
    await settle(sink, len(expected))
    assert sink.frames == expected


async def test_other_events_pass_through_in_arrival_order():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    db.add(1)
    await d.on_event({"event": "typing", "seq": None, "frame": "t1"})
    await d.on_event(created(1))
    await d.on_event({"event": "receipt.read", "seq": None, "frame": "r1"})
    assert sink.frames == ["t1", "m1", "r1"]


# --- streams ----------------------------------------------------------------------------


def streaming(count: int = 0) -> dict:
    return {"stream_id": "s", "state": "streaming", "chunk_count": count}


async def test_chunks_in_order_after_created_with_seam_at_chunk_count():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    db.add(1, state="streaming", chunks=2)
    await d.on_event(created(1, stream=streaming(2)))
    for event in (chunk(1, 0), chunk(1, 1), chunk(1, 2), chunk(1, 3, 4), chunk(1, 4), chunk(1, 5)):
        await d.on_event(event)
    assert sink.frames == ["m1", "c1:2-2", "c1:3-4", "c1:5-5"]


async def test_chunk_before_its_message_is_held_then_released():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    db.add(1, state="streaming", chunks=0)
    await d.on_event(chunk(1, 0))
    await d.on_event(chunk(1, 1))
    assert sink.frames == []
    await d.on_event(created(1, stream=streaming(0)))
    assert sink.frames == ["m1", "c1:0-0", "c1:1-1"]


async def test_chunk_of_a_message_whose_created_event_was_lost_triggers_the_gap_fill():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    db.add(1, state="streaming", chunks=3)  # the row already holds chunks 0..2
    for i in range(4):
        await d.on_event(chunk(1, i))
    await settle(sink, 2)
    assert sink.frames == ["m1", "c1:3-3"]


async def test_random_chunk_permutations_with_duplicates_arrive_exactly_once_in_order():
    for seed in range(20):
        rng = random.Random(seed)
        db, sink = FakeDB(), Sink()
        d = make(db, sink)
        db.add(1, state="streaming", chunks=0)
        events = [chunk(1, i) for i in range(30)] + [chunk(1, rng.randrange(30)) for _ in range(10)]
        rng.shuffle(events)
        events.insert(rng.randrange(len(events) + 1), created(1, stream=streaming(0)))
        for event in events:
            await d.on_event(event)
        await settle(sink, 31)
        assert sink.frames == ["m1"] + [f"c1:{i}-{i}" for i in range(30)], seed


async def test_chunk_gap_is_filled_by_the_streaming_loader(monkeypatch):
    calls = []

    async def loader(message_id: str, from_index: int):
        calls.append((message_id, from_index))
        return {"frame": f"fill:{from_index}-3", "chunk_index": from_index, "last_chunk_index": 3}

    d, sink = await stream_started(load_chunks=loader)
    await d.on_event(chunk(1, 0))
    await d.on_event(chunk(1, 3))  # 1 and 2 lost
    await d.on_event(chunk(1, 4))
    await settle(sink, 4)
    assert calls == [("id1", 1)]
    assert sink.frames == ["m1", "c1:0-0", "fill:1-3", "c1:4-4"]


async def test_chunk_gap_without_a_loader_continues_instead_of_stalling(monkeypatch):
    d, sink = await stream_started()
    await d.on_event(chunk(1, 2))
    await d.on_event(chunk(1, 4))
    await settle(sink, 3)
    assert sink.frames == ["m1", "c1:2-2", "c1:4-4"]
    await d.on_event(chunk(1, 5))
    assert sink.frames[-1] == "c1:5-5"


async def test_final_update_drops_later_chunks():
    d, sink = await stream_started()
    await d.on_event(chunk(1, 0))
    await d.on_event(updated(1, "completed"))
    await d.on_event(chunk(1, 1))
    assert sink.frames == ["m1", "c1:0-0", updated(1, "completed")["frame"]]


async def test_stream_read_from_the_database_after_it_ended_drops_its_late_chunks():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    db.add(1, state="completed", chunks=3)  # the created event was missed; the row is final
    for i in range(3):
        await d.on_event(chunk(1, i))
    await settle(sink, 1)
    assert sink.frames == ["m1"]


async def test_chunks_of_a_stream_older_than_the_subscription_are_followed_from_the_first_seen():
    db, sink = FakeDB(), Sink()
    d = make(db, sink, next_seq=5)  # the stream (seq 2) predates the subscription
    await d.on_event(chunk(2, 7))
    await d.on_event(chunk(2, 7))
    await d.on_event(chunk(2, 8))
    assert sink.frames == ["c2:7-7", "c2:8-8"]


async def test_close_cancels_pending_gap_fill():
    db, sink = FakeDB(), Sink()
    d = make(db, sink)
    db.add(1)
    db.add(2)
    await d.on_event(created(2))
    d.close()
    await asyncio.sleep(GAP * 5)
    assert sink.frames == [] and db.reads == []


async def test_final_update_that_overtakes_the_last_chunks_waits_for_them():
    d, sink = await stream_started()
    await d.on_event(chunk(1, 0))
    final = updated(1, "completed", chunk_count=4)
    await d.on_event(final)
    assert sink.frames == ["m1", "c1:0-0"]
    await d.on_event(chunk(1, 1, 2))
    await d.on_event(chunk(1, 3))
    assert sink.frames == ["m1", "c1:0-0", "c1:1-2", "c1:3-3", final["frame"]]
    await d.on_event(chunk(1, 3))
    await settle(sink, 5)
    assert len(sink.frames) == 5


async def test_final_update_with_chunk_events_lost_is_sent_after_the_loader_fills_them(monkeypatch):
    async def loader(message_id: str, from_index: int):
        return {"frame": f"fill:{from_index}-4", "chunk_index": from_index, "last_chunk_index": 4}

    d, sink = await stream_started(load_chunks=loader)
    await d.on_event(chunk(1, 0))
    final = updated(1, "completed", chunk_count=5)
    await d.on_event(final)
    await settle(sink, 4)
    assert sink.frames == ["m1", "c1:0-0", "fill:1-4", final["frame"]]


async def test_final_update_is_not_stalled_by_chunks_nobody_can_fill(monkeypatch):
    d, sink = await stream_started()
    final = updated(1, "aborted", chunk_count=3)
    await d.on_event(final)
    await settle(sink, 2)
    assert sink.frames == ["m1", final["frame"]]
    await d.on_event(chunk(1, 2))
    assert sink.frames == ["m1", final["frame"]]


async def test_a_read_that_finds_the_member_gone_ends_the_subscription():
    revoked = []
    sink = Sink()

    async def load(after: int, up_to: int, limit: int):
        raise delivery.SubscriptionRevoked()

    async def on_revoked():
        revoked.append(True)

    d = OrderedDelivery(send=sink.send, load=load, next_seq=1, gap_wait=GAP, on_revoked=on_revoked)
    await d.on_event(created(2))
    await settle(sink, 1)
    assert revoked == [True]
    await d.on_event(created(1))
    assert sink.frames == []
