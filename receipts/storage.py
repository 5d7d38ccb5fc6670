"""A cursor advance as one fixed statement on PostgreSQL: the ORM's version is a transaction
of up to seven queries (the member, the message's seq, two UPDATEs, two move rows, the unread
count), about 2.5 ms more of a process's CPU per read receipt than this one (bench/RESULTS.md,
"Receipts and the thread-sensitive thread"), and a chat client sends one for every message
it shows. SQLite keeps the ORM's version (`services`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache

from django.db import connection

from messaging.models import Conversation, Member, Message

from .models import CursorKind, CursorMove


@dataclass(frozen=True, slots=True)
class Advanced:
    target_seq: int | None  # None: message_id names no message of the conversation
    delivered_moved: bool
    read_moved: bool
    unread_count: int | None  # after a read move only


def fast() -> bool:
    return connection.vendor == "postgresql"


@cache
def _advance_sql() -> str:
    """The member's row locked (a concurrent advance from another device waits, then sees
    this one's result: never a step back, each move recorded once, in order), both cursors
    in one UPDATE, a move row per cursor that moved, and the unread count after a read."""
    member, conversation = Member._meta.db_table, Conversation._meta.db_table
    message, move = Message._meta.db_table, CursorMove._meta.db_table
    return f"""
WITH m AS (
    SELECT mb.id, mb.delivered_seq, mb.read_seq,
           CASE WHEN %(seq)s::bigint IS NOT NULL THEN LEAST(%(seq)s::bigint, c.last_seq)
                ELSE (SELECT x.seq FROM {message} x WHERE x.conversation_id = mb.conversation_id AND x.id = %(message_id)s::text)
           END AS target
    FROM {member} mb JOIN {conversation} c ON c.id = mb.conversation_id
    WHERE mb.tenant = %(tenant)s AND mb.conversation_id = %(conversation_id)s AND mb.user_id = %(user_id)s
    FOR UPDATE OF mb
), moved AS (
    SELECT m.id, m.target, m.delivered_seq < m.target AS delivered, %(read)s AND m.read_seq < m.target AS read FROM m
), u AS (
    UPDATE {member} x SET
        delivered_seq = CASE WHEN moved.delivered THEN moved.target ELSE x.delivered_seq END,
        delivered_at = CASE WHEN moved.delivered THEN %(now)s ELSE x.delivered_at END,
        read_seq = CASE WHEN moved.read THEN moved.target ELSE x.read_seq END,
        read_at = CASE WHEN moved.read THEN %(now)s ELSE x.read_at END
    FROM moved WHERE x.id = moved.id AND (moved.delivered OR moved.read)
), i AS (
    INSERT INTO {move} (tenant, member_id, kind, seq, at)
    SELECT %(tenant)s, moved.id, k.kind, moved.target, %(now)s
    FROM moved, (VALUES (%(delivered_kind)s, TRUE), (%(read_kind)s, FALSE)) AS k(kind, is_delivered)
    WHERE CASE WHEN k.is_delivered THEN moved.delivered ELSE moved.read END
)
SELECT moved.target, COALESCE(moved.delivered, FALSE), COALESCE(moved.read, FALSE),
       CASE WHEN moved.read THEN
           (SELECT count(*) FROM {message} y WHERE y.conversation_id = %(conversation_id)s AND y.seq > moved.target AND y.sender_id <> %(user_id)s)
       END
FROM moved
"""


def advance(
    *, tenant: str, user_id: str, conversation_id: str, seq: int | None, message_id: str | None, read: bool, now: datetime
) -> Advanced | None:
    """None if the caller is not a member of such a conversation (the caller tells which
    error). Atomic on its own: one statement."""
    params = {
        "tenant": tenant,
        "user_id": user_id,
        "conversation_id": conversation_id,
        "seq": seq,
        "message_id": message_id,
        "read": read,
        "now": now,
        "delivered_kind": CursorKind.DELIVERED.value,
        "read_kind": CursorKind.READ.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(_advance_sql(), params)
        row = cursor.fetchone()
    return None if row is None else Advanced(*row)
