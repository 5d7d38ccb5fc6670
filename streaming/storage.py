"""The per-chunk hot path as fixed SQL statements, written once per database vendor: compiled
by the ORM they cost as much CPU as the rest of the chunk (docs/streaming.md, "Storage and durability").
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from django.db import connection

from messaging.models import Member, Message, StreamState
from messaging.services import DependentRow

from .models import StreamChunk


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


@cache
def _find_sql(vendor: str, lock: bool) -> str:
    m, member = _q(Message._meta.db_table), _q(Member._meta.db_table)
    sql = (
        f"SELECT {m}.*, EXISTS(SELECT 1 FROM {member} WHERE {member}.{_q('conversation_id')} = {m}.{_q('conversation_id')}"
        f" AND {member}.{_q('user_id')} = %s) AS is_member FROM {m}"
        f" WHERE {m}.{_q('tenant')} = %s AND {m}.{_q('conversation_id')} = %s"
        f" AND {m}.{_q('sender_id')} = %s AND {m}.{_q('client_msg_id')} = %s"
    )
    if lock and connection.features.has_select_for_update_of:
        sql += f" FOR UPDATE OF {m}"
    elif lock and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    return sql


def find_stream(*, tenant: str, conversation_id: str, sender: str, client_msg_id: str, lock: bool) -> Message | None:
    """The sender's message named client_msg_id, annotated `is_member` (one query)."""
    rows = list(
        Message.objects.raw(_find_sql(connection.vendor, lock), [sender, tenant, conversation_id, sender, client_msg_id])
    )
    return rows[0] if rows else None


@cache
def _update_sql(vendor: str) -> str:
    m = _q(Message._meta.db_table)
    return (
        f"UPDATE {m} SET {_q('content')} = %s, {_q('stream_chunk_count')} = %s, {_q('stream_updated_at')} = %s,"
        f" {_q('stream_state')} = %s WHERE {_q('id')} = %s AND {_q('stream_state')} = %s AND {_q('stream_chunk_count')} = %s"
    )


@cache
def _insert_sql(vendor: str, rows: int) -> str:
    c = _q(StreamChunk._meta.db_table)
    values = ", ".join(["(%s, %s, %s)"] * rows)
    return f"INSERT INTO {c} ({_q('message_id')}, {_q('index')}, {_q('text')}) VALUES {values}"


@cache
def _append_sql(rows: int) -> str:
    """PostgreSQL: the conditional UPDATE and the chunk rows in one statement (one round trip
    fewer per chunk or run); the rows go in only if the UPDATE matched."""
    c = _q(StreamChunk._meta.db_table)
    values = ", ".join(["(%s, %s, %s)"] * rows)
    return (
        f"WITH u AS ({_update_sql('postgresql')} RETURNING 1)"
        f" INSERT INTO {c} ({_q('message_id')}, {_q('index')}, {_q('text')})"
        f" SELECT v.m, v.i, v.t FROM (VALUES {values}) AS v(m, i, t) WHERE EXISTS (SELECT 1 FROM u)"
    )


# What the one-statement append returns, in the model's field order: every field but the
# text and the metadata (left deferred: the text grows with each chunk).
_NEXT_FIELDS = [f for f in Message._meta.concrete_fields if f.attname not in ("content", "metadata")]


def _append_next_of_values(columns: str, rows: str, match: str) -> str:
    """PostgreSQL: the whole chunk in one statement, for each row of the query `rows` (named
    `columns`, among them chunk, size and sender) appended to the stream `match` finds:
    membership, state and the stored text's JSON size checked in the WHERE; the text appended
    in the database; the chunk row inserted only if the row was updated. Then the
    `%s` parameters: stream_updated_at, the open state, the size limit."""
    m, member, c = _q(Message._meta.db_table), _q(Member._meta.db_table), _q(StreamChunk._meta.db_table)
    content, count = _q("content"), _q("stream_chunk_count")
    returning = ", ".join(f"m.{_q(f.column)}" for f in _NEXT_FIELDS)
    return (
        f"WITH v({columns}) AS ({rows}),"
        f" u AS (UPDATE {m} AS m SET {content} = to_jsonb((m.{content} #>> '{{}}') || v.chunk),"
        f" {count} = m.{count} + 1, {_q('stream_updated_at')} = %s FROM v"
        f" WHERE {match} AND m.{_q('stream_state')} = %s"
        f" AND jsonb_typeof(m.{content}) = 'string' AND octet_length(m.{content}::text) + v.size <= %s"
        f" AND EXISTS(SELECT 1 FROM {member} WHERE {member}.{_q('conversation_id')} = m.{_q('conversation_id')}"
        f" AND {member}.{_q('user_id')} = v.sender)"
        f" RETURNING {returning}, v.chunk AS appended_chunk),"
        f" c AS (INSERT INTO {c} ({_q('message_id')}, {_q('index')}, {_q('text')})"
        f" SELECT u.{_q('id')}, u.{count} - 1, u.appended_chunk FROM u)"
        f" SELECT * FROM u"
    )


@cache
def _append_next_sql(with_index: bool) -> str:
    """The caller's stream found by its ids (and at `index`, if given)."""
    match = (
        f"m.{_q('tenant')} = v.tenant AND m.{_q('conversation_id')} = v.conversation_id"
        f" AND m.{_q('sender_id')} = v.sender AND m.{_q('client_msg_id')} = v.client_msg_id"
    )
    if with_index:
        return _append_next_of_values(
            "tenant, conversation_id, sender, client_msg_id, chunk, size, index",
            "VALUES (%s, %s, %s, %s, %s::text, %s::int, %s::int)",
            match + f" AND m.{_q('stream_chunk_count')} = v.index",
        )
    return _append_next_of_values(
        "tenant, conversation_id, sender, client_msg_id, chunk, size", "VALUES (%s, %s, %s, %s, %s::text, %s::int)", match
    )


def _next_params(values: list, now: datetime, max_bytes: int) -> list:
    updated_at = Message._meta.get_field("stream_updated_at").get_db_prep_value(now, connection)
    return [*values, updated_at, StreamState.STREAMING, max_bytes]


def _next_rows(rows: list[tuple]) -> list[Message]:
    names = [f.attname for f in _NEXT_FIELDS]
    return [Message.from_db(connection.alias, names, row[:-1]) for row in rows]  # without appended_chunk


def append_next(
    *, tenant: str, conversation_id: str, sender: str, client_msg_id: str, chunk: str, chunk_size: int, index: int | None,
    max_bytes: int, now: datetime,
) -> Message | None:
    """PostgreSQL only: append `chunk` (JSON size `chunk_size` without its quotes) to the
    caller's open stream at `index` (None: the next one) in one statement, committed on its
    own outside a transaction; the updated stream (content deferred), or None if any check
    failed and nothing was written."""
    values = [tenant, conversation_id, sender, client_msg_id, chunk, chunk_size] + ([] if index is None else [index])
    with connection.cursor() as cursor:
        cursor.execute(_append_next_sql(index is not None), _next_params(values, now, max_bytes))
        rows = _next_rows(cursor.fetchall())
    return rows[0] if rows else None


@cache
def _append_next_many_sql() -> str:
    """Many streams (distinct ids) in one statement, each found by its id. The rows come as
    one array per column: the statement's text and parameter count stay the same for any
    batch, so psycopg parses it once (a VALUES row each was ~3% of the server's CPU with 50
    replies streaming, re-parsed on every group commit)."""
    return _append_next_of_values(
        "id, tenant, sender, chunk, size",
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[])",
        f"m.{_q('id')} = v.id AND m.{_q('tenant')} = v.tenant AND m.{_q('sender_id')} = v.sender",
    )


def append_next_many(*, appends: list[tuple[str, str, str, str, int]], max_bytes: int, now: datetime) -> list[Message]:
    """PostgreSQL only: `append_next` without an index for many streams at once, each
    (message_id, tenant, sender, chunk, chunk_size) with a distinct message id, inside the
    caller's transaction. The streams that took their chunk (content deferred), in no order."""
    columns = [list(column) for column in zip(*appends, strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(_append_next_many_sql(), _next_params(columns, now, max_bytes))
        return _next_rows(cursor.fetchall())


def chunk_row(*, message_id: str, index: int, chunk: str) -> DependentRow:
    """Chunk `index` as a row stored with its new message (`insert_with_seq`)."""
    return DependentRow(
        table=_q(StreamChunk._meta.db_table), columns=(_q("message_id"), _q("index"), _q("text")), values=(message_id, index, chunk)
    )


def append_chunk(*, message_id: str, index: int, chunk: str, text: str, state: str, now: datetime) -> bool:
    """Store chunk `index` if the stream is still open at exactly that index."""
    return append_chunks(message_id=message_id, first=index, chunks=[chunk], text=text, state=state, now=now)


def append_chunks(*, message_id: str, first: int, chunks: list[str], text: str, state: str, now: datetime) -> bool:
    """Store chunks first.. (one UPDATE, one multi-row INSERT) if the stream is still open
    at exactly index `first`. `text` is the whole text with them."""
    fields = Message._meta
    content = fields.get_field("content").get_db_prep_value(text, connection)
    updated_at = fields.get_field("stream_updated_at").get_db_prep_value(now, connection)
    update = [content, first + len(chunks), updated_at, state, message_id, StreamState.STREAMING, first]
    rows = [value for i, chunk in enumerate(chunks) for value in (message_id, first + i, chunk)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_append_sql(len(chunks)), [*update, *rows])
            return cursor.rowcount == len(chunks)
        cursor.execute(_update_sql(connection.vendor), update)
        if cursor.rowcount != 1:
            return False
        cursor.execute(_insert_sql(connection.vendor, len(chunks)), rows)
    return True
