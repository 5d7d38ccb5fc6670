"""Query plan and timing of the conversation list (unread counts) and per-message receipts
for a user with many conversations, on PostgreSQL.

    createdb -h 127.0.0.1 -U postgres aiim_bench_unread
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/aiim_bench_unread \
        .venv/bin/python bench/unread_plan.py [conversations] [messages_each]

Populates once (bulk inserts), then prints EXPLAIN ANALYZE of both reads.
"""

from __future__ import annotations

import os
import sys
import time

import django

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiim_project.settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from messaging.models import Conversation, Member, Message  # noqa: E402
from messaging.selectors import _with_list_data  # noqa: E402
from receipts.models import CursorKind, CursorMove  # noqa: E402
from receipts.selectors import message_receipts  # noqa: E402

CONVERSATIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
MESSAGES = int(sys.argv[2]) if len(sys.argv) > 2 else 300
MEMBERS = 20
USER = "reader"


def populate() -> None:
    now = timezone.now()
    for c in range(CONVERSATIONS):
        conv = Conversation.objects.create(tenant="bench", type="group", name=f"c{c}", last_seq=MESSAGES)
        users = [USER, *(f"m{j}" for j in range(MEMBERS - 1))]
        # The reader has read a varying share; the others have read everything.
        members = Member.objects.bulk_create(
            [
                Member(tenant="bench", conversation=conv, user_id=u, delivered_seq=MESSAGES,
                       read_seq=(c * 7) % MESSAGES if u == USER else MESSAGES)
                for u in users
            ]
        )
        Message.objects.bulk_create(
            [
                Message(tenant="bench", conversation=conv, seq=s, sender_id=users[s % MEMBERS], content="x")
                for s in range(1, MESSAGES + 1)
            ],
            batch_size=2000,
        )
        CursorMove.objects.bulk_create(
            [
                CursorMove(tenant="bench", member=m, kind=k, seq=s, at=now)
                for m in members
                for k in CursorKind.values
                for s in range(10, MESSAGES + 1, 10)
            ],
            batch_size=5000,
        )
    with connection.cursor() as cur:
        cur.execute("ANALYZE")


def explain(sql: str, params) -> None:
    with connection.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        print("\n".join(row[0] for row in cur.fetchall()))


def main() -> None:
    call_command("migrate", verbosity=0)
    if not Conversation.objects.filter(tenant="bench").exists():
        t = time.perf_counter()
        populate()
        print(f"populated {CONVERSATIONS} conversations x {MESSAGES} messages in {time.perf_counter() - t:.1f}s")
    qs = Conversation.objects.filter(
        tenant="bench", id__in=Member.objects.filter(tenant="bench", user_id=USER).values("conversation_id")
    ).order_by("-updated_at", "-id")
    page = _with_list_data(qs, USER)[:51]
    print("=== conversation list page (51 rows) with unread counts")
    explain(*page.query.sql_with_params())
    everything = _with_list_data(qs, USER)
    print("=== every conversation of the user with unread counts")
    explain(*everything.query.sql_with_params())
    conv = Conversation.objects.filter(tenant="bench").first()
    first = Message.objects.filter(conversation=conv).order_by("seq").first()
    t = time.perf_counter()
    message_receipts(tenant="bench", user_id=USER, conversation_id=conv.id, message_id=first.id)
    print(f"=== receipts of the oldest message ({MEMBERS - 1} other members): {1000 * (time.perf_counter() - t):.1f} ms")


if __name__ == "__main__":
    main()
