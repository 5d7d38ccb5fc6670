"""Assistants benchmark (issue 18): what AIIM adds to a model's time to first token, and
chunk delivery of many concurrent runs.

Starts the fake model (`manage.py fake_model`, its own process) and one Daphne with its inline
runner on the database and Redis given in the environment, then:

1. TTFT: the fake's first token measured directly with the `openai` client and through AIIM
   (a subscriber's first `message.stream_chunk` after `send_msg`), in turn with the same pauses;
   reports the difference (and, for earlier figures, the direct call back to back).
2. Fan-out: R runs at once (one per conversation, S subscribers each), the fake streaming
   time-stamped words at T tokens/s; every subscriber checks it got every word once, in order,
   and the delay from the fake writing a word to the subscriber reading it; plus the server
   process's CPU per 1,000 tokens.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_h18 REDIS_URL=redis://127.0.0.1:6379/4 \\
        CHANNEL_LAYER_PREFIX=h18b python bench/assistants.py --runs 50 --subscribers 5 --rate 100

`--history N` gives the TTFT conversation N earlier messages first (each run starts a new one).
It migrates and writes into the database it is given: never point it at a real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiim_project.settings")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'bench_assistants.sqlite3'}")
# The server runs as in production (DEBUG off); the harness mints its tokens with the same secret.
os.environ["JWT_SECRET"] = "bench-assistants-secret-0123456789-0123456789"

import django

django.setup()

import openai
import websockets
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from aiim_project.core.auth import mint_token
from assistants import services as assistant_services
from assistants.models import Assistant, Run
from messaging import services as messaging_services
from messaging.models import Conversation, Message

TICK = os.sysconf("SC_CLK_TCK")
TENANT = "bench-assistants"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def pct(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"n": len(values), "p50": round(at(0.5), 2), "p90": round(at(0.9), 2), "p99": round(at(0.99), 2), "max": round(ordered[-1], 2)}


def setup_assistant(base_url: str, max_runs: int) -> None:
    Run.objects.filter(tenant=TENANT).delete()
    Assistant.objects.filter(tenant=TENANT).delete()
    assistant_services.assistant_create(
        tenant=TENANT,
        is_admin=True,
        assistant_id="bot",
        data=assistant_services.AssistantInput(name="Bench", base_url=base_url, model="fake", reply_in="always", max_concurrent_runs=max_runs),
    )


async def direct_sample(client: openai.AsyncOpenAI) -> float:
    t0 = time.perf_counter()
    stream = await client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}], stream=True)
    first = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = (time.perf_counter() - t0) * 1000
            break
    await stream.close()
    return first


async def direct_back_to_back(base_url: str, samples: int) -> list[float]:
    """The direct figure as measured until session 18: requests back to back, a warm machine."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    out = [await direct_sample(client) for _ in range(samples)]
    await client.close()
    return out


def fill_history(conversation_id: str, user: str, count: int) -> None:
    """`count` earlier messages: the user's texts and the assistant's replies (streams named
    run:..., as a run names them), then statistics, as autovacuum would have them (the
    machine's PostgreSQL runs without it)."""
    now = timezone.now()
    Message.objects.bulk_create(
        (
            Message(tenant=TENANT, conversation_id=conversation_id, seq=k, sender_id=user, type="text", content=f"earlier {k}", created_at=now)
            if k % 2
            else Message(tenant=TENANT, conversation_id=conversation_id, seq=k, sender_id="bot", type="ai", content=f"reply {k}",
                         client_msg_id=f"run:earlier{k}", stream_state="completed", stream_chunk_count=1, created_at=now)
            for k in range(1, count + 1)
        ),
        batch_size=1000,
    )
    Conversation.objects.filter(pk=conversation_id).update(last_seq=count)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


async def ttft(base_url: str, ws_url: str, samples: int, history: int) -> tuple[list[float], list[float]]:
    """Direct and through-AIIM samples taken in turn, each after the same 50 ms pause: on an
    idle machine every process involved has gone to sleep by then, and waking them costs the
    direct call too (~1.5 ms more than back to back here, bench/RESULTS.md "Session 18")."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    # A new conversation every run: the figure must not depend on what earlier runs left.
    user = f"ttft-{uuid.uuid4().hex[:8]}"
    conversation, _ = await asyncio.to_thread(
        messaging_services.conversation_create, tenant=TENANT, creator=user, type="direct", member_ids=["bot"]
    )
    if history:
        await asyncio.to_thread(fill_history, conversation.id, user, history)
    ws = await websockets.connect(f"{ws_url}?token={mint_token(user_id=user, tenant=TENANT)}", max_queue=None)
    await ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation.id}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    direct, through = [], []
    for k in range(samples):
        direct.append(await direct_sample(client))
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "send_msg", "conversation_id": conversation.id, "content": f"hi {k}"}))
        first = None
        while True:
            data = json.loads(await asyncio.wait_for(ws.recv(), 30)).get("data") or {}
            if first is None and data.get("event") == "message.stream_chunk":
                first = (time.perf_counter() - t0) * 1000
                # the rest of the reply is not measured: stop it
                await ws.send(json.dumps({"type": "stop_run", "conversation_id": conversation.id}))
            if data.get("event") == "message.updated":
                break
        through.append(first)
        await asyncio.sleep(0.05)
    await ws.close()
    await client.close()
    return direct, through


async def fanout(ws_url: str, pids: list[int], model_pid: int, runs: int, subscribers: int, words: int, rate: float) -> dict:
    convs = []
    for r in range(runs):
        conversation, _ = await asyncio.to_thread(
            messaging_services.conversation_create,
            tenant=TENANT,
            creator=f"c{r}-u0",
            type="group",
            member_ids=[f"c{r}-u{i}" for i in range(1, subscribers)] + ["bot"],
        )
        convs.append(conversation.id)
    clients = []
    for r, conv in enumerate(convs):
        for i in range(subscribers):
            ws = await websockets.connect(f"{ws_url}?token={mint_token(user_id=f'c{r}-u{i}', tenant=TENANT)}", max_queue=None)
            await ws.send(json.dumps({"type": "subscribe", "conversation_id": conv}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            clients.append((r, ws))
    latencies: list[float] = []
    # The words after the first second: the burst of 50 replies starting at once is over.
    steady: list[float] = []
    starting: list[float] = []  # the first second's: the replies' starts among them
    steady_from = int(rate)
    # p99 per second of the replies (word k in second k // rate): a stall, or a cost that
    # grows with the reply's length, shows as a rising or jumping series.
    by_second: dict[int, list[float]] = {}
    problems = {"missing": 0, "out_of_order": 0, "duplicate": 0}

    async def read(ws) -> None:
        expected = 0
        pending = ""
        async for frame in ws:
            now = time.time()
            parsed = json.loads(frame)
            if parsed.get("type") == "ping":  # AIIM's keep-alive: a silent client is closed (4408)
                await ws.send('{"type":"pong"}')
                continue
            data = parsed.get("data") or {}
            if data.get("event") == "message.stream_chunk":
                pending += data["delta"]
                *done, pending = pending.split(" ")
                for word in done:
                    k, sent = word.split(":")
                    k = int(k)
                    if k < expected:
                        problems["duplicate"] += 1
                    elif k > expected:
                        problems["out_of_order" if k > expected + 1 else "missing"] += 1
                    expected = max(expected, k + 1)
                    latencies.append((now - float(sent)) * 1000)
                    (steady if k >= steady_from else starting).append(latencies[-1])
                    by_second.setdefault(k // steady_from, []).append(latencies[-1])
            elif data.get("event") == "message.updated":
                problems["missing"] += max(0, words - expected)
                return

    readers = [asyncio.create_task(read(ws)) for _, ws in clients]
    senders = [ws for r, ws in clients if ws is clients[r * subscribers][1]]
    cpu0, t0 = sum(map(cpu_seconds, pids)), time.perf_counter()
    own0, model0 = cpu_seconds(os.getpid()), cpu_seconds(model_pid)
    for r, ws in enumerate(senders):
        await ws.send(json.dumps({"type": "send_msg", "conversation_id": convs[r], "content": "go"}))
    await asyncio.wait_for(asyncio.gather(*readers), 300)
    elapsed, cpu = time.perf_counter() - t0, sum(map(cpu_seconds, pids)) - cpu0
    own, model = cpu_seconds(os.getpid()) - own0, cpu_seconds(model_pid) - model0
    for _, ws in clients:
        await ws.close()
    tokens = runs * words
    return {
        "runs": runs,
        "subscribers_each": subscribers,
        "tokens": tokens,
        "elapsed_s": round(elapsed, 2),
        "chunk_delivery_ms": pct(latencies),
        "chunk_delivery_first_second_ms": pct(starting),
        "chunk_delivery_after_first_second_ms": pct(steady),
        "chunk_delivery_p99_per_second_ms": [pct(by_second[k])["p99"] for k in sorted(by_second)],
        **problems,
        "server_cpu_s_per_1000_tokens": round(1000 * cpu / tokens, 3),
        # the machine is shared by all three: a saturated harness or fake shows up as delay too
        "cpu_share_of_elapsed": {"server": round(cpu / elapsed, 2), "harness": round(own / elapsed, 2), "fake_model": round(model / elapsed, 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=5)
    parser.add_argument("--rate", type=float, default=100.0, help="tokens per second of each run")
    parser.add_argument("--words", type=int, default=300, help="tokens per run")
    parser.add_argument("--ttft-samples", type=int, default=30)
    parser.add_argument("--history", type=int, default=0, help="earlier messages in the TTFT conversation")
    parser.add_argument("--runner", choices=["inline", "worker"], default="inline", help="worker: a `manage.py run_assistants` process runs the runs")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    model_port, port = free_port(), free_port()
    model = subprocess.Popen(
        [sys.executable, "manage.py", "fake_model", "--port", str(model_port), "--delay", str(1 / args.rate), "--words", str(args.words)],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )
    env = {**os.environ, "RATE_LIMIT_PER_SEC": "0", "LOG_LEVEL": "WARNING", "DEBUG": "false", "SECRET_KEY": "bench-assistants-django-secret", "ASSISTANT_RUNNER": args.runner,
           "WS_IDLE_TIMEOUT": "600"}
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port), "aiim_project.asgi:application"], cwd=ROOT, env=env
    )
    workers = [subprocess.Popen([sys.executable, "manage.py", "run_assistants"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)] if args.runner == "worker" else []
    try:
        wait_listening(model_port)
        wait_listening(port)
        base_url = f"http://127.0.0.1:{model_port}/v1"
        setup_assistant(base_url, max_runs=args.runs)
        ws_url = f"ws://127.0.0.1:{port}/api/aiim/ws"
        back_to_back = asyncio.run(direct_back_to_back(base_url, args.ttft_samples))
        direct, through = asyncio.run(ttft(base_url, ws_url, args.ttft_samples, args.history))
        p50_direct, p50_through = statistics.median(direct), statistics.median(through)
        print(json.dumps({
            "ttft_direct_ms": pct(direct),
            "ttft_through_aiim_ms": pct(through),
            "ttft_added_p50_ms": round(p50_through - p50_direct, 2),
            "ttft_direct_back_to_back_ms": pct(back_to_back),
            "ttft_added_p50_over_back_to_back_ms": round(p50_through - statistics.median(back_to_back), 2),
            "history": args.history,
            "runner": args.runner,
            "database": django.db.connection.vendor,
        }))
        print(json.dumps(asyncio.run(fanout(ws_url, [server.pid, *(w.pid for w in workers)], model.pid, args.runs, args.subscribers, args.words, args.rate))))
    finally:
        for proc in (server, model, *workers):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


if __name__ == "__main__":
    main()
