"""How fast can one process accept stream chunks durably? (docs/streaming.md, "Storage")

Runs the real `streaming.services.stream_append` the way the gateway does (from an event
loop through `database_sync_to_async`, events published on that loop to the configured
channel layer) with S concurrent streams, and, for comparison, the same transaction
without the per-chunk row (lookup + conditional UPDATE only), to price the gap-fill rows.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_streams python bench/stream_storage.py
    python bench/stream_storage.py            # embedded SQLite (bench_streams.sqlite3)

It migrates and writes into the database it is given: never point it at a real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiim_project.settings")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'bench_streams.sqlite3'}")
os.environ.setdefault("RATE_LIMIT_PER_SEC", "0")

import django  # noqa: E402

django.setup()

from channels.db import database_sync_to_async  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from messaging import services as messaging_services  # noqa: E402
from messaging.models import Message  # noqa: E402
from streaming import services, storage  # noqa: E402


def update_only(*, tenant: str, sender: str, conversation_id: str, client_msg_id: str, chunk: str) -> None:
    """The same statements minus the chunk row: what per-chunk rows cost is the difference."""
    with transaction.atomic():
        m = storage.find_stream(tenant=tenant, conversation_id=conversation_id, sender=sender, client_msg_id=client_msg_id, lock=False)
        update = storage._update_sql(connection.vendor)
        content = Message._meta.get_field("content").get_db_prep_value(m.content + chunk, connection)
        now = Message._meta.get_field("stream_updated_at").get_db_prep_value(timezone.now(), connection)
        with connection.cursor() as cursor:
            count = m.stream_chunk_count
            cursor.execute(update, [content, count + 1, now, "streaming", m.pk, "streaming", count])


async def run(variant: str, streams: int, chunks: int, conversation_id: str) -> dict:
    write = database_sync_to_async(services.stream_append if variant == "service" else update_only)
    start_ids = [f"{variant}-{time.monotonic_ns()}-{i}" for i in range(streams)]
    for cmid in start_ids:  # every variant starts from an open stream
        await database_sync_to_async(services.stream_append)(
            tenant="bench", sender="bot", conversation_id=conversation_id, client_msg_id=cmid, chunk="start "
        )

    async def one(cmid: str) -> None:
        for _ in range(chunks):
            await write(tenant="bench", sender="bot", conversation_id=conversation_id, client_msg_id=cmid, chunk="tok ")

    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(one(c) for c in start_ids))
    elapsed, cpu1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    total = streams * chunks
    return {
        "variant": variant,
        "streams": streams,
        "chunks": total,
        "chunks_per_s": round(total / elapsed),
        "process_cpu_s": round(cpu, 2),
        "chunks_per_cpu_s": round(total / cpu) if cpu else None,
        "ms_per_chunk": round(1000 * elapsed / chunks, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=500, help="per stream (the text stays under MAX_MESSAGE_BYTES)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    conversation, _ = messaging_services.conversation_create(tenant="bench", creator="bot", type="group", member_ids=["u"])
    print(f"# backend={connection.vendor} channel_layer={os.environ.get('REDIS_URL') and 'redis' or 'in-memory'}")
    for variant in ("service", "update_only"):
        print(json.dumps(asyncio.run(run(variant, args.streams, args.chunks, conversation.id))))


if __name__ == "__main__":
    main()
