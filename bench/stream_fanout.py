"""What does a stream chunk cost the server per subscriber? (docs/streaming.md, "Coalescing")

Starts one Daphne on the database and Redis given in the environment, connects S subscribers
to one conversation and one streamer, streams N chunks (acks awaited in a window of 32), and
reports the server process's CPU seconds per chunk with S subscribers. The difference between
two values of S is the fan-out cost of one chunk event per subscriber, which is what
coalescing would divide.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_h3 REDIS_URL=redis://127.0.0.1:6379/3 \\
        CHANNEL_LAYER_PREFIX=h3b python bench/stream_fanout.py --subscribers 0,50

It migrates and writes into the database it is given: never point it at a real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiim_project.settings")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'bench_streams.sqlite3'}")

import django  # noqa: E402

django.setup()

import websockets  # noqa: E402
from django.core.management import call_command  # noqa: E402

from aiim_project.core.auth import mint_token  # noqa: E402
from messaging import services as messaging_services  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def scenario(url: str, pid: int, subscribers: int, chunks: int) -> dict:
    conversation, _ = await asyncio.to_thread(
        messaging_services.conversation_create,
        tenant="bench",
        creator="bot",
        type="group",
        member_ids=[f"u{i}" for i in range(max(subscribers, 1))],
    )
    subs = []
    for i in range(subscribers):
        ws = await websockets.connect(f"{url}?token={mint_token(user_id=f'u{i}', tenant='bench')}", max_queue=None)
        await ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation.id}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        subs.append(ws)
    received = [0] * subscribers
    finished = [asyncio.Event() for _ in range(subscribers)]

    async def drain(i: int, ws) -> None:
        async for frame in ws:
            received[i] += 1
            if '"message.updated"' in frame:
                finished[i].set()

    drains = [asyncio.create_task(drain(i, ws)) for i, ws in enumerate(subs)]
    bot = await websockets.connect(f"{url}?token={mint_token(user_id='bot', tenant='bench')}")
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    window = asyncio.Semaphore(32)

    async def acks() -> None:
        for _ in range(chunks):
            await bot.recv()
            window.release()

    reader = asyncio.create_task(acks())
    for i in range(chunks):
        await window.acquire()
        frame = {"type": "stream_chunk", "conversation_id": conversation.id, "client_msg_id": f"s{subscribers}",
                 "chunk": "tok ", "chunk_index": i, "stream_end": i == chunks - 1}
        await bot.send(json.dumps(frame))
    await reader
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in finished)), 120)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    for task in drains:
        task.cancel()
    for ws in [bot, *subs]:
        await ws.close()
    return {
        "subscribers": subscribers,
        "chunks": chunks,
        "server_cpu_ms_per_chunk": round(1000 * cpu / chunks, 3),
        "chunks_per_s": round(chunks / elapsed),
        # created + chunk events + updated: fewer than chunks + 2 when events were coalesced
        "frames_per_subscriber": min(received) if received else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", default="0,50")
    parser.add_argument("--chunks", type=int, default=1000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    port = free_port()
    env = {**os.environ, "RATE_LIMIT_PER_SEC": "0", "LOG_LEVEL": "WARNING", "DEBUG": "true"}
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aiim_project.asgi:application"],
        cwd=ROOT, env=env,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for n in (int(x) for x in args.subscribers.split(",")):
            print(json.dumps(asyncio.run(scenario(f"ws://127.0.0.1:{port}/api/aiim/ws", server.pid, n, args.chunks))))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
