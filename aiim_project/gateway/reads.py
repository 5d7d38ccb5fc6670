"""Subscription reads, coalesced per process: the subscribe snapshot (with its replay) and the
subscription's later reads (tail check, gap fill). Requests queue on the event loop (`Batcher`); one
batch at a time runs on one worker thread, and whatever queued meanwhile is the next batch
(docs/gateway.md, "Batched subscription reads").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from aiim_project.core.batches import Batcher
from aiim_project.core.checks import MAX_OBJECT_ID_LENGTH, is_id
from aiim_project.core.db import in_worker
from aiim_project.core.per_loop import PerLoop
from messaging import selectors

from . import delivery

# Bounds a batch's queries (IN lists, SQLite's variable limit); more wait for the next one.
MAX_BATCH = 500


# -- the subscribe snapshot -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    last_seq: int
    rows: list[delivery.StoredMessage] | None  # None: more than the limit were missed


def read_snapshots(requests: list[tuple[selectors.SnapshotRequest, int]]) -> list[Snapshot | Exception]:
    """Requests (what, limit); the stored frames of a conversation are built once for all."""
    out: list[Snapshot | Exception | None] = [None] * len(requests)
    by_limit: dict[int, list[int]] = defaultdict(list)
    for i, (r, limit) in enumerate(requests):
        if is_id(r.conversation_id, MAX_OBJECT_ID_LENGTH):
            by_limit[limit].append(i)
        else:  # no id of ours looks like this: read alone, so its error (e.g. a NUL PostgreSQL refuses) stays its own
            out[i] = _alone(r, limit)
    for limit, idx in by_limit.items():
        results = selectors.subscription_snapshots([requests[i][0] for i in idx], limit)
        with_rows = {requests[i][0].conversation_id for i, res in zip(idx, results) if isinstance(res, tuple) and res[1]}
        members = selectors.cursors_by_conversation(with_rows) if with_rows else {}
        stored: dict[str, dict[int, delivery.StoredMessage]] = {}
        for i, res in zip(idx, results):
            if isinstance(res, Exception):
                out[i] = res
                continue
            last_seq, rows = res
            if not rows:
                out[i] = Snapshot(last_seq, rows)
                continue
            cid = requests[i][0].conversation_id
            frames = stored.setdefault(cid, {})
            missing = [m for m in rows if m.seq not in frames]
            if missing:
                for s in delivery.stored_messages(missing, members.get(cid, ())):
                    frames[s.seq] = s
            out[i] = Snapshot(last_seq, [frames[m.seq] for m in rows])
    return out  # type: ignore[return-value]


def _alone(r: selectors.SnapshotRequest, limit: int) -> Snapshot | Exception:
    try:
        last_seq, rows = selectors.subscription_snapshot(
            tenant=r.tenant, user_id=r.user_id, conversation_id=r.conversation_id, since_seq=r.since_seq, limit=limit
        )
    except Exception as exc:
        return exc
    return Snapshot(last_seq, delivery.stored_messages(rows, selectors.member_cursors(r.conversation_id)) if rows else rows)


# -- reads of a live subscription (tail check, gap fill) ----------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    tenant: str
    user_id: str
    conversation_id: str
    after_seq: int
    up_to_seq: int
    limit: int


def read_loads(requests: Sequence[Load]) -> list[list[delivery.StoredMessage] | Exception]:
    """Membership first (a lost member.left shows here), then one read per distinct range:
    the tail checks of a conversation's subscribers ask for the same one."""
    by_tenant: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for r in requests:
        by_tenant[r.tenant].add((r.conversation_id, r.user_id))
    members = {(t, *pair) for t, pairs in by_tenant.items() for pair in selectors.members_among(t, pairs)}
    ranges: dict[tuple[str, int, int, int], list] = {}
    for r in requests:
        if (r.tenant, r.conversation_id, r.user_id) in members:
            key = (r.conversation_id, r.after_seq, r.up_to_seq, r.limit)
            if key not in ranges:
                ranges[key] = selectors.messages_after(conversation_id=key[0], after_seq=key[1], limit=key[3], up_to_seq=key[2])
    with_rows = {cid for (cid, *_), rows in ranges.items() if rows}
    statuses = selectors.cursors_by_conversation(with_rows) if with_rows else {}
    built = {key: delivery.stored_messages(rows, statuses.get(key[0], ())) if rows else [] for key, rows in ranges.items()}
    return [
        built[(r.conversation_id, r.after_seq, r.up_to_seq, r.limit)]
        if (r.tenant, r.conversation_id, r.user_id) in members
        else delivery.SubscriptionRevoked()
        for r in requests
    ]


class Reads:
    def __init__(self) -> None:
        self.snapshots: Batcher[tuple[selectors.SnapshotRequest, int]] = Batcher(in_worker(read_snapshots), MAX_BATCH)
        self.loads: Batcher[Load] = Batcher(in_worker(read_loads), MAX_BATCH)


_reads: PerLoop[Reads] = PerLoop(lambda loop: Reads())


def get_reads() -> Reads:
    return _reads.get()
