"""A scripted OpenAI-compatible chat completions server on loopback, for trying assistants
without a model (`manage.py fake_model`) and for the tests (a real HTTP server: the runner's
real client, sockets and disconnects are exercised).

Each `POST /v1/chat/completions` takes the next queued `Script` (`server.queue(...)`), or the
default one, and answers it: a JSON error status, or an SSE stream of words with a delay,
optional reasoning deltas first, an optional usage chunk, garbage, or stalls. Every request
is recorded (`requests`), and so is every client that hung up before the stream's end
(`disconnects`, with the time), which is how the tests see a stop close the model request.
Standard library only (asyncio streams): it needs to speak just enough HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

ECHO = "__echo__"


@dataclass
class Script:
    text: str = ECHO  # the reply; ECHO = "You said: <the last user message>"
    delay: float = 0.02  # seconds between words
    reasoning: list[str] = field(default_factory=list)  # reasoning deltas before the content
    usage: bool = True  # a usage chunk at the end when the client asks (stream_options.include_usage)
    status: int = 200  # != 200: answer with this HTTP status and an OpenAI-style error body
    garbage: bool = False  # a stream of lines that are not JSON
    stall_before_first: bool = False  # headers sent, then nothing, ever
    stall_after: int | None = None  # send this many words, then nothing, ever
    first_delay: float = 0.0  # extra wait before the first content word
    stamp: bool = False  # each word becomes "<index>:<unix time sent> " (the benchmark's latency probe)


@dataclass
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


class FakeModel:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, default: Script | None = None):
        self.host, self.port = host, port
        self.default = default or Script()
        self._queue: deque[Script] = deque()
        self.requests: list[Recorded] = []
        self.disconnects: list[float] = []
        self.completed = 0
        self._ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def queue(self, *scripts: Script) -> None:
        self._queue.extend(scripts)

    # -- running it ------------------------------------------------------------------

    async def serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def start(self) -> FakeModel:
        """In a thread of its own (sync tests, the command), so it serves whatever the caller's loop does."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-model", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            # Open connections end here, on their own loop, not later in the garbage collector
            # (which would log their teardown as an ignored exception from any thread).
            await self.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    # -- HTTP ---------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        if method == "GET" and path.rstrip("/").endswith("/models"):
            await self._json(writer, 200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
            return True
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await self._json(writer, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return True
        request = json.loads(body or b"{}")
        self.requests.append(Recorded(request, {k: v for k, v in headers.items() if k != "authorization"} | {"authorization": headers.get("authorization", "")}, time.time()))
        script = self._queue.popleft() if self._queue else self.default
        if script.status != 200:
            kind = "authentication_error" if script.status == 401 else "server_error"
            await self._json(writer, script.status, {"error": {"message": f"scripted {script.status}", "type": kind}})
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n")
        await writer.drain()
        # The client hanging up ends the read below; the stream is then cancelled and recorded.
        stream = asyncio.ensure_future(self._stream(writer, request, script))
        hangup = asyncio.ensure_future(reader.read(1))
        # A reset connection fails both: the read's error is expected, not worth a log line.
        hangup.add_done_callback(lambda task: task.cancelled() or task.exception())
        done, _ = await asyncio.wait({stream, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if stream in done:
            hangup.cancel()
            if stream.exception() is None:
                self.completed += 1
            else:
                self.disconnects.append(time.time())
        else:
            stream.cancel()
            self.disconnects.append(time.time())
        return False

    async def _json(self, writer: asyncio.StreamWriter, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
        )
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, request: dict, script: Script) -> None:
        ident, model, created = f"chatcmpl-{next(self._ids)}", request.get("model", "fake"), int(time.time())

        async def send(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> None:
            chunk: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
            chunk["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            if usage is not None:
                chunk["usage"] = usage
            writer.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await writer.drain()

        if script.stall_before_first:
            await asyncio.Event().wait()
        if script.garbage:
            writer.write(b"data: {not json at all\n\ndata: <html>oops</html>\n\n")
            await writer.drain()
            return
        for part in script.reasoning:
            await send({"role": "assistant", "content": None, "reasoning_content": part})
            await asyncio.sleep(script.delay)
        if script.first_delay:
            await asyncio.sleep(script.first_delay)
        words = reply_words(script, request)
        for k, word in enumerate(words):
            if script.stall_after is not None and k == script.stall_after:
                await asyncio.Event().wait()
            if script.stamp:
                word = f"{k}:{time.time():.6f} "
            await send({"role": "assistant", "content": word} if k == 0 else {"content": word})
            if script.delay:
                await asyncio.sleep(script.delay)
        await send({}, finish="stop")
        if script.usage and (request.get("stream_options") or {}).get("include_usage"):
            prompt = sum(len(str(m.get("content", ""))) for m in request.get("messages", [])) // 4 + 1
            await send(None, usage={"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)})
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()


def reply_words(script: Script, request: dict) -> list[str]:
    """The reply split into words that keep their spaces: joined, they are the exact text."""
    text = script.text
    if text == ECHO:
        last = next((m for m in reversed(request.get("messages", [])) if m.get("role") == "user"), None)
        text = f"You said: {last['content']}" if last else "Hello! Nobody has said anything yet."
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]] if parts else []
