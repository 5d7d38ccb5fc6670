"""Black-box load generator for AIIM (run by bench/run.py; see bench/RESULTS.md, "How to reproduce").

A separate process from the server: it talks to one or more Daphne processes only over
HTTP and WebSocket, spreading connections round-robin over the given ports. Each scenario
is bounded in time and in count and prints one JSON object with throughput, latency
percentiles, server CPU and RSS (read from /proc of the server PIDs), and correctness per
subscriber (missing, duplicated and out-of-order messages, which must all be zero).

Latency: every message's content carries the loadgen's send time (`ts`, perf_counter);
stream chunks are token-sized, so their send times are kept in a table instead.

    JWT_SECRET=... python bench/loadgen.py --ports 18800,18801 --pids 123,456 fanout-light

Tokens are minted with aiim_project.core.auth.mint_token, so JWT_SECRET (and JWT_ALGORITHM)
must match the server's. The server should run with RATE_LIMIT_PER_SEC=0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import connect as ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiim_project.settings")
# The loadgen needs only the token signer: keep it off the server's database and Redis.
for _var in ("DATABASE_URL", "REDIS_URL"):
    os.environ.pop(_var, None)
import django  # noqa: E402

django.setup()
from aiim_project.core.auth import mint_token  # noqa: E402

TENANT = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
now = time.perf_counter


# -- server and self accounting from /proc ----------------------------------------------


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(user + system, system) CPU ticks of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return utime + stime, stime


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class ProcStats:
    """CPU seconds and RSS of the server processes (and of the loadgen) over a window."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_rss_kb = {pid: 0 for pid in pids}
        self._sampler: asyncio.Task | None = None

    def start(self) -> None:
        self.t0 = now()
        self.cpu0 = {pid: _cpu_ticks(pid) for pid in self.pids}
        self.self0 = _cpu_ticks(os.getpid())[0]
        self.rss0 = {pid: _rss_kb(pid) for pid in self.pids}
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            for pid in self.pids:
                self.peak_rss_kb[pid] = max(self.peak_rss_kb[pid], _rss_kb(pid))
            await asyncio.sleep(0.5)

    def stop(self) -> dict[str, Any]:
        if self._sampler:
            self._sampler.cancel()
        wall = now() - self.t0
        out: dict[str, Any] = {"wall_s": round(wall, 2), "server": []}
        for pid in self.pids:
            (total, system), (total0, system0) = _cpu_ticks(pid), self.cpu0[pid]
            cpu, sys_cpu = (total - total0) / CLK_TCK, (system - system0) / CLK_TCK
            rss = _rss_kb(pid)
            self.peak_rss_kb[pid] = max(self.peak_rss_kb[pid], rss)
            out["server"].append(
                {
                    "pid": pid,
                    "cpu_s": round(cpu, 2),
                    "cpu_pct": round(100 * cpu / wall, 1),
                    "sys_pct": round(100 * sys_cpu / wall, 1),
                    "rss_start_mb": round(self.rss0[pid] / 1024, 1),
                    "rss_end_mb": round(rss / 1024, 1),
                    "rss_peak_mb": round(self.peak_rss_kb[pid] / 1024, 1),
                }
            )
        out["loadgen_cpu_pct"] = round(100 * (_cpu_ticks(os.getpid())[0] - self.self0) / CLK_TCK / wall, 1)
        return out


def pct(values: list[float]) -> dict[str, Any]:
    """p50/p95/p99/max in milliseconds."""
    if not values:
        return {"n": 0}
    v = sorted(values)
    pick = lambda p: round(1000 * v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))], 2)  # noqa: E731
    return {"n": len(v), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": round(1000 * v[-1], 2)}


# -- a minimal keep-alive HTTP/1.1 client ----------------------------------------------
# Light on purpose: the loadgen shares one core with everything it measures, and this is
# all it needs (JSON in, JSON out, Content-Length or chunked answers).


class Http:
    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = orjson.dumps(body) if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            payload = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            payload = b"".join(parts)
        else:
            payload = b""
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, (orjson.loads(payload) if payload else None)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# -- WebSocket client ----------------------------------------------------------------


@dataclass
class StreamView:
    """What one subscriber saw of one stream."""

    next_chunk: int = 0
    chunks: int = 0
    dup: int = 0
    gaps: int = 0
    text: list[str] = field(default_factory=list)
    final: str | None = None


class Client:
    """One WebSocket connection of one user: frames with req_id resolve futures; events are
    recorded per conversation (seqs in arrival order, latencies)."""

    def __init__(self, user: str, port: int, rec: Recorder) -> None:
        self.user, self.port, self.rec = user, port, rec
        self.token = mint_token(user_id=user, tenant=TENANT, ttl=7200)
        self.pending: dict[str, asyncio.Future] = {}
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.streams: dict[str, StreamView] = {}
        self._ids = itertools.count()
        self.ws = None
        self.reader: asyncio.Task | None = None

    async def open(self) -> float:
        t0 = now()
        self.ws = await ws_connect(
            f"ws://127.0.0.1:{self.port}/api/aiim/ws?token={self.token}",
            compression=None,
            ping_interval=None,
            max_queue=None,
            open_timeout=30,
        )
        took = now() - t0
        self.reader = asyncio.create_task(self._read())
        return took

    async def request(self, frame: dict) -> dict:
        req_id = str(next(self._ids))
        frame["req_id"] = req_id
        fut = asyncio.get_running_loop().create_future()
        self.pending[req_id] = fut
        await self.ws.send(orjson.dumps(frame).decode())
        return await fut

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                t = now()
                frame = orjson.loads(raw)
                kind = frame.get("type")
                if kind == "event":
                    self._on_event(frame["data"], t)
                elif kind == "ping":
                    await self.ws.send('{"type":"pong"}')
                else:
                    if kind == "subscribed":  # replayed events must follow it
                        frame["_events_before"] = len(self.seqs.get(frame["conversation_id"], ()))
                    fut = self.pending.pop(frame.get("req_id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                    elif kind == "error":
                        self.rec.errors[frame.get("code", "?")] += 1
        except websockets.ConnectionClosed as exc:
            self.rec.closed[str(exc.rcvd.code if exc.rcvd else "none")] += 1
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("closed"))

    def _on_event(self, data: dict, t: float) -> None:
        event = data["event"]
        if event == "message.created":
            message = data["message"]
            self.seqs[data["conversation_id"]].append(message["seq"])
            self.rec.deliveries += 1
            self.rec.last_delivery = t
            content = message["content"]
            if isinstance(content, dict) and "ts" in content:
                self.rec.delivery_lat.append(t - content["ts"])
                self.rec.delivery_at.append(t)
        elif event == "member.joined":
            self.rec.joined_at.setdefault((data["conversation_id"], data["user_id"]), t)
        elif event == "message.stream_chunk":
            view = self.streams.setdefault(data["message_id"], StreamView())
            first, last = data["chunk_index"], data["last_chunk_index"]
            if last < view.next_chunk:
                view.dup += 1
            else:
                if first != view.next_chunk:
                    view.gaps += 1
                view.text.append(data["delta"])
                view.chunks += last - first + 1
                view.next_chunk = last + 1
            self.rec.deliveries += 1
            self.rec.last_delivery = t
            sent = self.rec.chunk_sent.get((data["message_id"], last))
            if sent is not None:
                self.rec.delivery_lat.append(t - sent)
        elif event == "message.updated":
            message = data["message"]
            stream = message.get("stream") or {}
            if stream.get("state") in ("completed", "aborted"):
                self.streams.setdefault(message["message_id"], StreamView()).final = message["content"]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


@dataclass
class Recorder:
    deliveries: int = 0
    last_delivery: float = 0.0
    delivery_lat: list[float] = field(default_factory=list)
    delivery_at: list[float] = field(default_factory=list)  # receive times, same order
    ack_lat: list[float] = field(default_factory=list)
    ack_at: list[float] = field(default_factory=list)  # ack receive times (send_msg), for per-minute rates
    joined_at: dict[tuple[str, str], float] = field(default_factory=dict)  # (conversation, user) -> member.joined receipt
    acked: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    chunk_sent: dict[tuple[str, int], float] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)
    closed: Counter = field(default_factory=Counter)


# -- shared set-up -------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.ports: list[int] = args.ports
        self.pids: list[int] = args.pids
        self.run = uuid.uuid4().hex[:8]
        self._rr = itertools.cycle(self.ports)
        self.args = args

    def user(self, i: int, j: int = 0) -> str:
        return f"u{self.run}-{i}-{j}"

    def next_port(self) -> int:
        return next(self._rr)

    async def create_conversation(self, owner: str, others: list[str]) -> str:
        http = Http(self.ports[0], mint_token(user_id=owner, tenant=TENANT, ttl=7200))
        try:
            status, body = await http.request("POST", "/api/aiim/conversations", {"type": "group", "member_ids": others})
        finally:
            await http.close()
        if status != 201:
            raise RuntimeError(f"create conversation: {status} {body}")
        return body["conversation_id"]

    async def groups(self, n_conv: int, n_members: int) -> list[tuple[str, list[str]]]:
        """n_conv conversations of n_members fresh users each (member 0 is the owner)."""
        sem = asyncio.Semaphore(10)

        async def one(i: int) -> tuple[str, list[str]]:
            users = [self.user(i, j) for j in range(n_members)]
            async with sem:
                return await self.create_conversation(users[0], users[1:]), users

        return await asyncio.gather(*(one(i) for i in range(n_conv)))

    async def connect_all(self, rec: Recorder, groups, limit: int = 100) -> tuple[list[list[Client]], list[float], list[float]]:
        """One WS per member, each subscribed to its conversation. Member j of conversation i
        goes to port (i + j) mod n: round-robin over the ports that also spreads the senders
        (member 0), which a plain counter would put all on one port when the conversation
        size is a multiple of n."""
        sem = asyncio.Semaphore(limit)
        connect_lat: list[float] = []
        sub_lat: list[float] = []

        async def one(conv: str, user: str, port: int) -> Client:
            client = Client(user, port, rec)
            async with sem:
                connect_lat.append(await client.open())
                t0 = now()
                reply = await client.request({"type": "subscribe", "conversation_id": conv})
                sub_lat.append(now() - t0)
            if reply.get("type") != "subscribed":
                raise RuntimeError(f"subscribe failed: {reply}")
            return client

        n = len(self.ports)
        clients = await asyncio.gather(
            *(
                asyncio.gather(*(one(conv, u, self.ports[(i + j) % n]) for j, u in enumerate(users)))
                for i, (conv, users) in enumerate(groups)
            )
        )
        return [list(c) for c in clients], connect_lat, sub_lat


def timeline(rec: Recorder, t0: float, step: float) -> list[float]:
    """Median delivery latency per `step` seconds of the run: a queue that grows shows here."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for at, lat in zip(rec.delivery_at, rec.delivery_lat):
        buckets[int((at - t0) // step)].append(lat)
    return [pct(buckets[k])["p50"] for k in sorted(buckets)]


def correctness(rec: Recorder, groups, clients: list[list[Client]]) -> dict[str, int]:
    """Per subscriber: acked seqs it never got, seqs it got twice, seqs not above the last."""
    missing = dup = ooo = unexpected = 0
    for (conv, _), members in zip(groups, clients):
        acked = rec.acked[conv]
        for c in members:
            got = c.seqs.get(conv, [])
            seen = set(got)
            missing += len(acked - seen)
            dup += len(got) - len(seen)
            unexpected += len(seen - acked)
            ooo += sum(1 for a, b in zip(got, got[1:]) if b <= a)
    return {"missing": missing, "duplicated": dup, "out_of_order": ooo, "unacked_received": unexpected}


async def drain(rec: Recorder, groups, clients, timeout: float) -> float:
    """Wait until every subscriber has the highest acked seq of its conversation."""
    t0 = now()
    while now() - t0 < timeout:
        if all(
            not rec.acked[conv] or max(rec.acked[conv]) in set(c.seqs.get(conv, ()))
            for (conv, _), members in zip(groups, clients)
            for c in members
        ):
            break
        await asyncio.sleep(0.05)
    return now() - t0


async def close_all(clients: list[list[Client]]) -> None:
    await asyncio.gather(*(c.close() for members in clients for c in members), return_exceptions=True)


# -- scenarios -----------------------------------------------------------------------


async def sender_loop(
    rec: Recorder, client: Client, conv: str, *, until: float, window: int, max_msgs: int, interval: float | None, start: float | None = None
) -> int:
    """send_msg with `window` acks outstanding (or one every `interval` s from `start`) until the deadline."""
    sem = asyncio.Semaphore(window)
    tasks: set[asyncio.Task] = set()
    sent = 0

    async def one(i: int) -> None:
        t0 = now()
        try:
            reply = await client.request(
                {
                    "type": "send_msg",
                    "conversation_id": conv,
                    "client_msg_id": f"m{i}",
                    "content": {"text": f"message {i} from the load generator", "ts": t0},
                }
            )
        except ConnectionError:
            rec.errors["connection_closed"] += 1
            return
        finally:
            sem.release()
        if reply.get("type") == "ack":
            rec.ack_at.append(now())
            rec.ack_lat.append(now() - t0)
            rec.acked[conv].add(reply["seq"])
        else:
            rec.errors[reply.get("code", "?")] += 1

    next_at = now() if start is None else start
    while now() < until and sent < max_msgs:
        if interval is not None:
            await asyncio.sleep(max(0.0, next_at - now()))
            next_at += interval
        await sem.acquire()
        task = asyncio.create_task(one(sent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return sent


async def fanout(
    b: Bench, n_conv: int, n_members: int, *, duration: float, window: int, interval: float | None = None, rec: Recorder | None = None
) -> dict:
    rec = rec or Recorder()
    groups = await b.groups(n_conv, n_members)
    clients, connect_lat, _ = await b.connect_all(rec, groups)
    await asyncio.sleep(0.5)
    stats = ProcStats(b.pids)
    stats.start()
    t0 = now()
    # Paced senders are spread evenly over the interval: started together, every sender of
    # the run would send at the same instant, and "unloaded" latency would measure a burst
    # of n_conv sends queueing behind each other (--burst keeps that shape).
    phase = 0.0 if interval is None or b.args.burst else interval / len(groups)
    sent = await asyncio.gather(
        *(
            sender_loop(
                rec, members[0], conv, until=t0 + duration, window=window, max_msgs=b.args.max_msgs, interval=interval, start=t0 + k * phase
            )
            for k, ((conv, _), members) in enumerate(zip(groups, clients))
        )
    )
    t_acked = now()
    drain_s = await drain(rec, groups, clients, b.args.drain)
    proc = stats.stop()
    acked = sum(len(s) for s in rec.acked.values())
    elapsed = t_acked - t0
    result = {
        "conversations": n_conv,
        "members": n_members,
        "connections": n_conv * n_members,
        "window": window,
        "interval_ms": None if interval is None else interval * 1000,
        "phase_ms": round(phase * 1000, 2),
        "sent": sum(sent),
        "acked": acked,
        "acked_per_s": round(acked / elapsed, 1),
        "deliveries": rec.deliveries,
        "deliveries_per_s": round(rec.deliveries / (max(rec.last_delivery, t_acked) - t0), 1),
        "ack_latency_ms": pct(rec.ack_lat),
        "delivery_latency_ms": pct(rec.delivery_lat),
        "drain_s": round(drain_s, 2),
        "delivery_p50_ms_per_2s": timeline(rec, t0, 2.0),
        # a long run (two --step or more): acked/s per step, to show decay
        "acked_per_s_per_step": [
            round(sum(1 for at in rec.ack_at if t0 + k * b.args.step <= at < t0 + (k + 1) * b.args.step) / b.args.step, 1)
            for k in range(int(duration // b.args.step))
        ],
        "correctness": correctness(rec, groups, clients),
        "errors": dict(rec.errors),
        "closed": dict(rec.closed),
        **proc,
    }
    await close_all(clients)
    return result


async def stream_one(rec: Recorder, client: Client, conv: str, *, chunks: int, window: int, until: float) -> tuple[str | None, str]:
    """Stream `chunks` token-sized chunks with `window` acks outstanding (in order: the
    server handles one connection's frames one after another); past `until` the next chunk
    ends the stream early."""
    stream_id = f"s-{uuid.uuid4().hex[:8]}"
    sem = asyncio.Semaphore(window)
    sent_text: list[str] = []
    message_id: list[str] = []
    tasks = []

    async def one(i: int, text: str, end: bool) -> None:
        t0 = now()
        frame = {"type": "stream_chunk", "conversation_id": conv, "client_msg_id": stream_id, "chunk": text, "chunk_index": i, "stream_end": end}
        if message_id:
            rec.chunk_sent[(message_id[0], i)] = t0
        try:
            reply = await client.request(frame)
        finally:
            sem.release()
        if reply.get("type") == "ack":
            rec.ack_lat.append(now() - t0)
            if not message_id:
                message_id.append(reply["message_id"])
            rec.acked[conv].add(i)
        else:
            rec.errors[reply.get("code", "?")] += 1

    # The first chunk alone: it creates the message whose id keys the latency table.
    for i in range(chunks):
        text = f" tok{i % 1000:03d}"
        sent_text.append(text)
        await sem.acquire()
        last = i == chunks - 1 or now() >= until
        tasks.append(asyncio.create_task(one(i, text, last)))
        if i == 0:
            await tasks[0]
        if last:
            break
    await asyncio.gather(*tasks)
    return (message_id[0] if message_id else None), "".join(sent_text)


async def stream(b: Bench, n_streams: int, *, chunks: int, subscribers: int, window: int, duration: float) -> dict:
    rec = Recorder()
    groups = await b.groups(n_streams, subscribers)
    clients, _, _ = await b.connect_all(rec, groups)
    await asyncio.sleep(0.5)
    stats = ProcStats(b.pids)
    stats.start()
    t0 = now()
    outcomes = await asyncio.gather(
        *(
            stream_one(rec, members[0], conv, chunks=chunks, window=window, until=t0 + duration)
            for (conv, _), members in zip(groups, clients)
        )
    )
    t_acked = now()
    # Drain: every subscriber has the final message.updated of its stream.
    while now() - t_acked < 15 and not all(
        mid is not None and c.streams.get(mid, StreamView()).final is not None
        for (mid, _), members in zip(outcomes, clients)
        for c in members
    ):
        await asyncio.sleep(0.05)
    proc = stats.stop()
    acked = sum(len(s) for s in rec.acked.values())
    missing = dup = gaps = bad_text = 0
    for (mid, text), members in zip(outcomes, clients):
        for c in members:
            view = c.streams.get(mid, StreamView())
            missing += len(text) // len(" tok000") - view.chunks
            dup += view.dup
            gaps += view.gaps
            bad_text += int("".join(view.text) != text or view.final != text)
    elapsed = t_acked - t0
    result = {
        "streams": n_streams,
        "subscribers": subscribers,
        "chunks_per_stream": chunks,
        "chunks_sent": sum(len(text) // len(" tok000") for _, text in outcomes),
        "window": window,
        "acked_chunks": acked,
        "chunks_per_s": round(acked / elapsed, 1),
        "chunk_events": rec.deliveries,
        "ack_latency_ms": pct(rec.ack_lat),
        "delivery_latency_ms": pct(rec.delivery_lat),
        "correctness": {"missing_chunks": missing, "duplicated": dup, "out_of_order": gaps, "text_mismatch": bad_text},
        "errors": dict(rec.errors),
        **proc,
    }
    await close_all(clients)
    return result


async def rest(b: Bench, n_clients: int, *, duration: float, history_s: float) -> dict:
    """n_clients keep-alive HTTP clients, each posting into its own conversation."""
    groups = await b.groups(n_clients, 2)
    https = [Http(b.next_port(), mint_token(user_id=users[0], tenant=TENANT, ttl=7200)) for _, users in groups]
    lat: list[float] = []
    statuses: Counter = Counter()
    seqs: dict[str, list[int]] = defaultdict(list)

    async def poster(http: Http, conv: str, until: float) -> None:
        i = 0
        while now() < until and i < b.args.max_msgs:
            t0 = now()
            status, body = await http.request(
                "POST", "/api/aiim/messages", {"conversation_id": conv, "client_msg_id": f"r{i}", "content": {"text": f"rest {i}", "ts": t0}}
            )
            statuses[status] += 1
            if status == 201:
                lat.append(now() - t0)
                seqs[conv].append(body["message"]["seq"])
            i += 1

    stats = ProcStats(b.pids)
    stats.start()
    t0 = now()
    await asyncio.gather(*(poster(h, conv, t0 + duration) for h, (conv, _) in zip(https, groups)))
    elapsed = now() - t0
    proc = stats.stop()
    posts = sum(len(s) for s in seqs.values())
    # Each client's seqs must be 1..n with no gap (one writer per conversation).
    seq_errors = sum(1 for s in seqs.values() if s != list(range(1, len(s) + 1)))

    read_lat: list[float] = []
    read_status: Counter = Counter()

    async def reader(http: Http, conv: str, until: float) -> None:
        while now() < until:
            t1 = now()
            status, body = await http.request("GET", f"/api/aiim/messages/{conv}?limit=50")
            read_status[status] += 1
            if status == 200:
                read_lat.append(now() - t1)

    stats2 = ProcStats(b.pids)
    stats2.start()
    t1 = now()
    await asyncio.gather(*(reader(h, conv, t1 + history_s) for h, (conv, _) in zip(https, groups)))
    read_elapsed = now() - t1
    proc2 = stats2.stop()
    for h in https:
        await h.close()
    return {
        "clients": n_clients,
        "posts": posts,
        "posts_per_s": round(posts / elapsed, 1),
        "post_latency_ms": pct(lat),
        "post_status": dict(statuses),
        "seq_errors": seq_errors,
        **proc,
        "history": {
            "reads": len(read_lat),
            "reads_per_s": round(len(read_lat) / read_elapsed, 1),
            "latency_ms": pct(read_lat),
            "status": dict(read_status),
            "server": proc2["server"],
        },
    }


async def receipts(b: Bench, n_clients: int, *, duration: float) -> dict:
    """n_clients connections, each in its own conversation of 2 (subscribed): send a message,
    then mark it read, one after the other; read receipts acknowledged per second and their
    ack latency (a chat client sends one per message it shows)."""
    rec = Recorder()
    groups = await b.groups(n_clients, 2)
    clients, _, _ = await b.connect_all(rec, [(conv, users[:1]) for conv, users in groups])
    read_lat: list[float] = []
    errors: Counter = Counter()

    async def reader(client: Client, conv: str, until: float) -> None:
        while now() < until:
            sent = await client.request({"type": "send_msg", "conversation_id": conv, "content": {"text": "r", "ts": now()}})
            if sent.get("type") != "ack":
                errors[sent.get("code", "?")] += 1
                continue
            t0 = now()
            reply = await client.request({"type": "read", "conversation_id": conv, "last_read_seq": sent["seq"]})
            if reply.get("type") == "ack":
                read_lat.append(now() - t0)
            else:
                errors[reply.get("code", "?")] += 1

    stats = ProcStats(b.pids)
    stats.start()
    t0 = now()
    await asyncio.gather(*(reader(members[0], conv, t0 + duration) for (conv, _), members in zip(groups, clients)))
    elapsed = now() - t0
    proc = stats.stop()
    await close_all(clients)
    return {
        "clients": n_clients,
        "reads": len(read_lat),
        "reads_per_s": round(len(read_lat) / elapsed, 1),
        "read_ack_ms": pct(read_lat),
        "errors": dict(errors),
        **proc,
    }


async def connect(b: Bench, n: int, *, members: int, hold: float, limit: int) -> dict:
    """n concurrent connections, each subscribed; RSS per idle connection; then one message
    per conversation must reach every connection."""
    rec = Recorder()
    groups = await b.groups(n // members, members)
    await asyncio.sleep(1.0)
    rss0 = {pid: _rss_kb(pid) for pid in b.pids}
    stats = ProcStats(b.pids)
    stats.start()
    t0 = now()
    clients, connect_lat, sub_lat = await b.connect_all(rec, groups, limit=limit)
    setup_s = now() - t0
    await asyncio.sleep(hold)
    rss1 = {pid: _rss_kb(pid) for pid in b.pids}
    for (conv, _), ms in zip(groups, clients):
        reply = await ms[0].request({"type": "send_msg", "conversation_id": conv, "content": {"text": "hello", "ts": now()}})
        if reply.get("type") == "ack":
            rec.acked[conv].add(reply["seq"])
    await drain(rec, groups, clients, b.args.drain)
    proc = stats.stop()
    grown_kb = sum(rss1[p] - rss0[p] for p in b.pids)
    result = {
        "connections": sum(len(m) for m in clients),
        "in_flight_limit": limit,
        "setup_s": round(setup_s, 2),
        "connect_latency_ms": pct(connect_lat),
        "subscribe_latency_ms": pct(sub_lat),
        "rss_before_mb": round(sum(rss0.values()) / 1024, 1),
        "rss_idle_mb": round(sum(rss1.values()) / 1024, 1),
        "kb_per_connection": round(grown_kb / max(1, n), 1),
        "delivery_latency_ms": pct(rec.delivery_lat),
        "correctness": correctness(rec, groups, clients),
        "errors": dict(rec.errors),
        "closed": dict(rec.closed),
        **proc,
    }
    await close_all(clients)
    return result


def _pg_counters(db: str) -> tuple[int, int] | None:
    """(transactions committed, rows returned) of a PostgreSQL database, from pg_stat_database
    (read like /proc: server-side accounting, not the service's API)."""
    try:
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", f"select xact_commit, tup_returned from pg_stat_database where datname = '{db}'"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        commits, rows = out.split("|")
        return int(commits), int(rows)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


async def reconnect_storm(b: Bench, *, n_conv: int, members: int, history: int, back: int) -> dict:
    """After a deploy every client reconnects at once: n_conv x members connections, all
    opened together (no in-flight limit), each subscribing with a since_seq 1..`back` messages
    behind the `history` messages its conversation already has, so every subscribe replays.
    Subscribe latency is as in connect_all (subscribe frame sent to `subscribed` received);
    connect-to-subscribed adds the handshake. Replay correctness: each connection must get
    exactly since_seq+1..L in order, after `subscribed`, then one live message per conversation."""
    rec = Recorder()
    groups = await b.groups(n_conv, members)
    last: dict[str, int] = {}

    async def fill(conv: str, owner: str) -> None:
        http = Http(b.next_port(), mint_token(user_id=owner, tenant=TENANT, ttl=7200))
        for i in range(history):
            status, body = await http.request("POST", "/api/aiim/messages", {"conversation_id": conv, "client_msg_id": f"h{i}", "content": {"text": f"history {i}"}})
            if status != 201:
                raise RuntimeError(f"history post: {status} {body}")
            last[conv] = body["message"]["seq"]
        await http.close()

    await asyncio.gather(*(fill(conv, users[0]) for conv, users in groups))
    await asyncio.sleep(1.0)
    n = len(b.ports)
    plan = [
        (conv, Client(u, b.ports[(i + j) % n], rec), max(0, last[conv] - 1 - j % back))
        for i, (conv, users) in enumerate(groups)
        for j, u in enumerate(users)
    ]
    connect_lat: list[float] = []
    sub_lat: list[float] = []
    total_lat: list[float] = []
    failures: Counter = Counter()
    early_events = 0
    wrong_last_seq = 0
    ok: list[bool] = [False] * len(plan)
    start = asyncio.Event()

    async def one(k: int, conv: str, client: Client, since: int) -> None:
        nonlocal early_events, wrong_last_seq
        await start.wait()
        t0 = now()
        try:
            connect_lat.append(await client.open())
            t1 = now()
            reply = await client.request({"type": "subscribe", "conversation_id": conv, "since_seq": since})
            t2 = now()
        except Exception as exc:
            failures[type(exc).__name__] += 1
            return
        if reply.get("type") != "subscribed":
            failures[f"reply_{reply.get('code', reply.get('type'))}"] += 1
            return
        sub_lat.append(t2 - t1)
        total_lat.append(t2 - t0)
        early_events += reply.get("_events_before", 0)
        wrong_last_seq += reply.get("last_seq") != last[conv]
        ok[k] = True

    pg_db = os.environ.get("BENCH_PG_STAT_DB", "")
    pg0 = _pg_counters(pg_db) if pg_db else None
    rss0 = {pid: _rss_kb(pid) for pid in b.pids}
    stats = ProcStats(b.pids)
    stats.start()
    tasks = [asyncio.create_task(one(k, conv, c, since)) for k, (conv, c, since) in enumerate(plan)]
    await asyncio.sleep(0)
    t0 = now()
    start.set()
    await asyncio.gather(*tasks)
    setup_s = now() - t0
    # Every replay must be in before the live message goes out (it would pass otherwise).
    deadline = now() + b.args.drain
    while now() < deadline and any(ok[k] and len(c.seqs.get(conv, ())) < last[conv] - since for k, (conv, c, since) in enumerate(plan)):
        await asyncio.sleep(0.05)
    replay_s = now() - t0
    proc = stats.stop()
    pg1 = None
    if pg0 is not None:
        await asyncio.sleep(2.0)  # backends flush their statistics within about a second
        pg1 = _pg_counters(pg_db)
    rss1 = {pid: _rss_kb(pid) for pid in b.pids}
    # One live message per conversation, from a connected member, must reach every connection.
    live: dict[str, int] = {}
    for conv, _ in groups:
        sender = next((c for k, (cv, c, _) in enumerate(plan) if cv == conv and ok[k]), None)
        if sender is None:
            continue
        reply = await sender.request({"type": "send_msg", "conversation_id": conv, "content": {"text": "after the storm", "ts": now()}})
        if reply.get("type") == "ack":
            live[conv] = reply["seq"]
            rec.acked[conv].add(reply["seq"])
        else:
            failures[f"live_{reply.get('code')}"] += 1
    deadline = now() + b.args.drain
    while now() < deadline and any(ok[k] and live.get(conv) not in c.seqs.get(conv, ()) for k, (conv, c, _) in enumerate(plan)):
        await asyncio.sleep(0.05)
    bad = {"missing": 0, "duplicated": 0, "out_of_order": 0, "unexpected": 0, "connections_wrong": 0}
    for k, (conv, c, since) in enumerate(plan):
        if not ok[k]:
            continue
        expected = [*range(since + 1, last[conv] + 1), *([live[conv]] if conv in live else [])]
        got = c.seqs.get(conv, [])
        if got != expected:
            bad["connections_wrong"] += 1
            seen = set(got)
            bad["missing"] += len(set(expected) - seen)
            bad["duplicated"] += len(got) - len(seen)
            bad["unexpected"] += len(seen - set(expected))
            bad["out_of_order"] += sum(1 for a, z in zip(got, got[1:]) if z <= a)
    result = {
        "connections": len(plan),
        "conversations": n_conv,
        "members": members,
        "history": history,
        "replayed": sum(last[conv] - since for k, (conv, _, since) in enumerate(plan) if ok[k]),
        "subscribed": sum(ok),
        "failures": dict(failures),
        "setup_s": round(setup_s, 2),
        "replays_in_s": round(replay_s, 2),
        "connect_latency_ms": pct(connect_lat),
        "subscribe_latency_ms": pct(sub_lat),
        "connect_to_subscribed_ms": pct(total_lat),
        "events_before_subscribed": early_events,
        "wrong_last_seq": wrong_last_seq,
        "replay_correctness": bad,
        "live_delivery_latency_ms": pct(rec.delivery_lat),
        "kb_per_connection": round(sum(rss1[p] - rss0[p] for p in b.pids) / max(1, len(plan)), 1),
        "errors": dict(rec.errors),
        "closed": dict(rec.closed),
        **proc,
    }
    if pg0 is not None and pg1 is not None:
        result["pg_per_subscribe"] = {
            "transactions": round((pg1[0] - pg0[0]) / max(1, sum(ok)), 2),
            "rows_returned": round((pg1[1] - pg0[1]) / max(1, sum(ok)), 1),
        }
    # The other half of a deploy: every connection closes at once. Until the servers'
    # connection gauge (public /metrics) reads zero, and their CPU meanwhile.
    stats = ProcStats(b.pids)
    stats.start()
    await asyncio.gather(*(c.close() for _, c, _ in plan), return_exceptions=True)
    while now() - stats.t0 < 30 and _scrape_gauge(b.args.metrics_ports or b.ports, "aiim_ws_connections") > 0:
        await asyncio.sleep(0.02)
    closing = stats.stop()
    result["close_storm"] = {"wall_s": closing["wall_s"], "server_cpu_s": round(sum(s["cpu_s"] for s in closing["server"]), 2)}
    return result


async def create_burst(b: Bench, *, n_groups: int, size: int, duration: float, limit: int) -> dict:
    """n_groups x size users connected (not subscribed); each group's first user creates
    conversations with the other size-1 as members, back to back, for `duration` s. Each
    member.joined reaches the member's connection through its user group: from the creator's
    201 (sent after the commit) to that receipt is the event's commit-to-socket lag, which a
    one-PUBLISH-at-a-time publisher stretched under such bursts (issue 21)."""
    rec = Recorder()
    users = [[b.user(i, j) for j in range(size)] for i in range(n_groups)]
    sem = asyncio.Semaphore(limit)

    async def open_one(user: str) -> Client:
        async with sem:
            c = Client(user, b.next_port(), rec)
            await c.open()
            return c

    clients = await asyncio.gather(*(open_one(u) for group in users for u in group))
    await asyncio.sleep(1.0)
    created: list[tuple[str, list[str], float]] = []
    statuses: Counter = Counter()
    stats = ProcStats(b.pids)
    stats.start()
    t0 = now()

    async def creator(group: list[str]) -> None:
        http = Http(b.next_port(), mint_token(user_id=group[0], tenant=TENANT, ttl=7200))
        while now() < t0 + duration:
            status, body = await http.request("POST", "/api/aiim/conversations", {"type": "group", "member_ids": group[1:]})
            statuses[status] += 1
            if status == 201:
                created.append((body["conversation_id"], group[1:], now()))
        await http.close()

    await asyncio.gather(*(creator(group) for group in users))
    elapsed = now() - t0
    expected = [(conv, u, at) for conv, members, at in created for u in members]
    deadline = now() + b.args.drain
    while now() < deadline and any((conv, u) not in rec.joined_at for conv, u, _ in expected):
        await asyncio.sleep(0.05)
    proc = stats.stop()
    lag = [rec.joined_at[(conv, u)] - at for conv, u, at in expected if (conv, u) in rec.joined_at]
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {
        "groups": n_groups,
        "members": size,
        "creates": len(created),
        "creates_per_s": round(len(created) / elapsed, 1),
        "create_status": dict(statuses),
        "member_joined_expected": len(expected),
        "member_joined_missing": len(expected) - len(lag),
        # negative: the event beat the creator's 201 to the member's socket
        "member_joined_after_201_ms": pct(lag),
        "errors": dict(rec.errors),
        "closed": dict(rec.closed),
        **proc,
    }


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def soak(b: Bench, *, duration: float, step: float) -> dict:
    """Mixed load for `duration` s: fan-out 10x5 (window 4), 2 REST posters, streams one after
    another (500 chunks to 5 subscribers each), and connect churn (a fresh member connects,
    subscribes and leaves every 0.5 s). Per `step` s: fan-out acked/s, server CPU, RSS and open
    descriptors, to show decay or growth."""
    rec = Recorder()
    t0 = now()
    until = t0 + duration
    series: list[dict] = []

    async def sampler() -> None:
        cpu0 = {pid: _cpu_ticks(pid)[0] for pid in b.pids}
        k = 0
        while True:
            await asyncio.sleep(max(0.0, t0 + (k + 1) * step - now()))
            k += 1
            acks = sum(1 for at in rec.ack_at if t0 + (k - 1) * step <= at < t0 + k * step)
            cpu = {pid: _cpu_ticks(pid)[0] for pid in b.pids}
            series.append(
                {
                    "minute": k,
                    "acked_per_s": round(acks / step, 1),
                    "cpu_ms_per_ack": round(1000 * sum(cpu[p] - cpu0[p] for p in b.pids) / CLK_TCK / max(1, acks), 3),
                    "rss_mb": [round(_rss_kb(p) / 1024, 1) for p in b.pids],
                    "fds": [_fds(p) for p in b.pids],
                }
            )
            cpu0 = cpu

    async def streams() -> list[dict]:
        out = []
        while now() < until - 5:
            out.append(await stream(b, 1, chunks=500, subscribers=5, window=4, duration=until - now()))
        return out

    async def churn() -> int:
        ((conv, users),) = await b.groups(1, 1)
        owner = Http(b.ports[0], mint_token(user_id=users[0], tenant=TENANT, ttl=7200))
        done = 0
        while now() < until:
            user = f"{users[0]}-c{done}"
            status, _ = await owner.request("POST", f"/api/aiim/conversations/{conv}/members", {"user_ids": [user]})
            if status not in (200, 201):
                rec.errors[f"churn_add_{status}"] += 1
            c = Client(user, b.next_port(), rec)
            try:
                await c.open()
                reply = await c.request({"type": "subscribe", "conversation_id": conv})
                if reply.get("type") != "subscribed":
                    rec.errors["churn_subscribe"] += 1
            except Exception:
                rec.errors["churn_connect"] += 1
            await c.close()
            status, _ = await owner.request("DELETE", f"/api/aiim/conversations/{conv}/members/{user}")
            if status != 204:
                rec.errors[f"churn_remove_{status}"] += 1
            done += 1
            await asyncio.sleep(0.5)
        await owner.close()
        return done

    sample = asyncio.create_task(sampler())
    fan, rest_r, stream_r, churned = await asyncio.gather(
        fanout(b, 10, 5, duration=duration, window=4, rec=rec),
        rest(b, 2, duration=duration, history_s=0),
        streams(),
        churn(),
    )
    await asyncio.sleep(max(0.0, t0 + len(series) * step + step - now()) if len(series) * step < duration else 0)
    sample.cancel()
    first = series[0]["acked_per_s"] if series else 0
    return {
        "duration_s": duration,
        "step_s": step,
        "series": series,
        "worst_step_vs_first": round(min(s["acked_per_s"] for s in series) / first, 3) if first else None,
        "fanout": fan,
        "rest": {k: rest_r[k] for k in ("posts", "posts_per_s", "post_status", "seq_errors")},
        "streams": [{k: s.get(k) for k in ("acked_chunks", "chunks_per_s", "correctness")} for s in stream_r],
        "churn_connections": churned,
    }


def _metrics_lines(ports: list[int]):
    """The lines of every server's /metrics (public); a server that does not answer has none."""
    for port in ports:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            continue
        yield from text.splitlines()


def _scrape_gauge(ports: list[int], name: str) -> float:
    """A gauge summed over the servers."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in _metrics_lines(ports) if line.startswith((name + " ", name + "{")))


def _scrape_histogram(ports: list[int], name: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram, summed over the servers."""
    buckets: dict[float, float] = defaultdict(float)
    for line in _metrics_lines(ports):
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] += float(line.rsplit(" ", 1)[1])
    return dict(buckets)


def histogram_delta(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """n and the bucket bounds holding p50/p99 (ms) of what was observed in between."""
    if not after:
        return {"n": 0, "absent": True}
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    n = delta[-1][1]
    if not n:
        return {"n": 0}
    bound = lambda q: next((le for le, c in delta if c >= q * n), float("inf"))  # noqa: E731
    return {"n": int(n), "p50_le_ms": bound(0.5) * 1000, "p99_le_ms": bound(0.99) * 1000}


SCENARIOS = {
    "fanout-light": lambda b, a: fanout(b, 10, 5, duration=a.duration, window=4),
    "fanout-heavy": lambda b, a: fanout(b, 50, 10, duration=a.duration, window=4),
    # the scaling shape (run.py --capped): 5 members are coprime with 2, 4 and 8 processes, so
    # the round-robin spreads each conversation, and the senders, over all of them
    "fanout-20x5": lambda b, a: fanout(b, 20, 5, duration=a.duration, window=4),
    # the same shape with the load scaled with the processes (20 conversations per process):
    # each process keeps the queue depth, and so the batch sizes, of one process on fanout-20x5
    "fanout-40x5": lambda b, a: fanout(b, 40, 5, duration=a.duration, window=4),
    "fanout-80x5": lambda b, a: fanout(b, 80, 5, duration=a.duration, window=4),
    "fanout-160x5": lambda b, a: fanout(b, 160, 5, duration=a.duration, window=4),
    "sparse": lambda b, a: fanout(b, 10, 5, duration=min(a.duration, 10), window=1, interval=0.150),
    "stream": lambda b, a: stream(b, 1, chunks=500, subscribers=5, window=a.stream_window, duration=a.duration),
    "stream-20": lambda b, a: stream(b, 20, chunks=500, subscribers=5, window=a.stream_window, duration=a.duration),
    "rest-10": lambda b, a: rest(b, 10, duration=a.duration, history_s=min(a.duration, a.history)),
    "rest-20": lambda b, a: rest(b, 20, duration=a.duration, history_s=min(a.duration, a.history)),
    "receipts-20": lambda b, a: receipts(b, 20, duration=a.duration),
    "connect-500": lambda b, a: connect(b, 500, members=10, hold=3.0, limit=a.connect_limit),
    "connect-1000": lambda b, a: connect(b, 1000, members=10, hold=3.0, limit=a.connect_limit),
    "soak": lambda b, a: soak(b, duration=a.duration, step=a.step),
    "reconnect-storm": lambda b, a: reconnect_storm(b, n_conv=20, members=50, history=10, back=5),
    "create-burst": lambda b, a: create_burst(b, n_groups=4, size=50, duration=a.duration, limit=a.connect_limit),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="+", choices=[*SCENARIOS, "all"])
    parser.add_argument("--ports", type=lambda s: [int(p) for p in s.split(",")], default=[18800])
    parser.add_argument("--metrics-ports", type=lambda s: [int(p) for p in s.split(",") if p], default=[], help="servers' ports for /metrics (default --ports; behind nginx, which does not pass /metrics on)")
    parser.add_argument("--pids", type=lambda s: [int(p) for p in s.split(",") if p], default=[])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of sending per scenario")
    parser.add_argument("--drain", type=float, default=15.0, help="seconds to wait for deliveries after the last ack; what is still missing then counts as missing")
    parser.add_argument("--history", type=float, default=10.0, help="seconds of history reads after the posts of rest-10/rest-20 (0: posts only, e.g. to profile them alone)")
    parser.add_argument("--max-msgs", type=int, default=200_000, help="cap per sender")
    parser.add_argument("--burst", action="store_true", help="paced senders (sparse) all send at the same instant instead of spread over the interval")
    parser.add_argument("--stream-window", type=int, default=4, help="chunk acks outstanding per stream")
    parser.add_argument("--connect-limit", type=int, default=100, help="handshakes in flight at once")
    parser.add_argument("--step", type=float, default=60.0, help="soak: seconds per sample of the time series")
    parser.add_argument("--label", default="", help="free text copied into each result line")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    names = list(SCENARIOS) if "all" in args.scenarios else args.scenarios

    async def run() -> None:
        b = Bench(args)
        for name in names:
            lag0 = _scrape_histogram(args.metrics_ports or b.ports, "aiim_publish_lag_seconds")
            try:
                result = await SCENARIOS[name](b, args)
            except Exception as exc:  # a server that refuses the load is a result too
                result = {"failed": f"{type(exc).__name__}: {exc}"}
            # commit-to-PUBLISH lag from the servers' /metrics (absent before issue 21)
            result["publish_lag"] = histogram_delta(lag0, _scrape_histogram(args.metrics_ports or b.ports, "aiim_publish_lag_seconds"))
            print(json.dumps({"scenario": name, "label": args.label, "ports": args.ports, **result}), flush=True)
            await asyncio.sleep(1.0)

    asyncio.run(run())


if __name__ == "__main__":
    main()
