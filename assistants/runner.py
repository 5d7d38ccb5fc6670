"""The asyncio runner: claims queued runs and streams each model reply into its message.

One per event loop: inline in every Daphne process (ASSISTANT_RUNNER=inline, started by the
first ASGI call, see `start_inline`), or in `manage.py run_assistants` processes. Nothing here
blocks the loop: the ORM goes through `in_worker`, the model through the official `openai`
async client. See docs/assistants.md for the states, timeouts and retries.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
from django.conf import settings

from aiim_project.core import events
from aiim_project.core import redis as aiim_redis
from aiim_project.core.db import in_worker
from aiim_project.core.errors import AiimError

from . import execution, wake
from .chunk_writer import ChunkWriter
from .execution import ChunkWrite, Prepared, RunFailed, Usage
from .models import Run
from .rendering import state_event

logger = logging.getLogger("aiim.assistants")

MAX_RETRIES = 2


class ModelFailure(Exception):
    def __init__(self, code: str, detail: str, *, retryable: bool):
        super().__init__(detail)
        self.code, self.detail, self.retryable = code, detail, retryable


class ModelStreamError(Exception):
    """An `{"error": ...}` event in the model's stream."""


class ModelConnectionLost(Exception):
    """Reading the model's response failed in the transport (reset, closed early, timeout)."""


async def response_lines(response: Any) -> AsyncIterator[str]:
    try:
        async for line in response.iter_lines():
            yield line
    except Exception as exc:
        raise ModelConnectionLost(type(exc).__name__) from exc


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data` of each server-sent event (multi-line data joined by newlines; comments,
    `event:` and `id:` fields ignored): what the chat completions stream carries."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
    if data:
        yield "\n".join(data)


class LostRun(Exception):
    """The run was ended by someone else (a stop, the lease reaper): write nothing more."""


@dataclass
class Progress:
    """One run's reply so far, across attempts."""

    buffer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)  # stored with the reply's first chunk
    text_len: int = 0  # characters stored
    stored: bool = False  # content was stored: no retry any more
    generating: bool = False
    last_flush: float = 0.0
    usage: Any = None
    finish_reason: str | None = None
    prompt_chars: int = 0


def _estimate(progress: Progress) -> Usage:
    """No usage chunk from the server: about four characters a token (marked estimated)."""
    completion = progress.text_len + sum(len(p) for p in progress.buffer)
    return Usage(prompt_tokens=math.ceil(progress.prompt_chars / 4), completion_tokens=math.ceil(completion / 4), estimated=True)


def _usage(progress: Progress) -> Usage:
    u = progress.usage
    if isinstance(u, dict) and u.get("total_tokens") is not None:
        return Usage(prompt_tokens=u.get("prompt_tokens") or 0, completion_tokens=u.get("completion_tokens") or 0, estimated=False)
    return _estimate(progress)


def _status_failure(exc: openai.APIStatusError) -> ModelFailure:
    status = exc.status_code
    retryable = status >= 500 or status in (408, 409, 429)
    return ModelFailure("model_error", f"The model endpoint answered HTTP {status}.", retryable=retryable)


class Runner:
    def __init__(self, owner: str | None = None):
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tasks: dict[str, asyncio.Task] = {}
        self.lost: set[str] = set()
        self.writer = ChunkWriter(self.owner)
        self._wakeup = asyncio.Event()
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}
        self._next_reap = 0.0
        self._next_renew = 0.0
        self._woken = False

    def wake(self) -> None:
        self._woken = True  # something was queued or stopped here: skip the "anything queued?" read
        self._wakeup.set()

    def free_slots(self) -> int:
        """Read from the send path's worker threads too: two sends at once may both see the
        last slot, so a process can run a few more than ASSISTANT_PROCESS_RUNS for a while."""
        return settings.ASSISTANT_PROCESS_RUNS - len(self.tasks)

    def adopt(self, items: list[tuple[Run, Prepared | RunFailed]]) -> None:
        """Runs a send in this process started for this runner (`wake.hand_over`)."""
        for run, prepared in items:
            if run.id not in self.tasks:
                self._start(run, prepared, after_send=True)

    def _start(self, run: Run, prepared: Prepared | RunFailed, *, after_send: bool = False) -> None:
        coro = self._execute(run, prepared, after_send=after_send)
        self.tasks[run.id] = asyncio.get_running_loop().create_task(coro, name=f"assistant-run-{run.id}")

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        wake.register(loop, self)
        listener = loop.create_task(self._listen_for_wakes(), name="aiim-assistant-wakes") if aiim_redis.redis_enabled() else None
        try:
            while True:
                try:
                    await self.tick()
                except Exception as exc:  # a database outage must not kill the runner
                    logger.warning("assistant runner tick failed: %s", type(exc).__name__)
                try:
                    await asyncio.wait_for(self._wakeup.wait(), settings.ASSISTANT_POLL_INTERVAL)
                except TimeoutError:
                    pass
                self._wakeup.clear()
        finally:
            wake.unregister(loop)
            if listener is not None:
                listener.cancel()
            for task in self.tasks.values():
                task.cancel()
            for client in self._clients.values():
                await client.close()

    async def _listen_for_wakes(self) -> None:
        """Wakes published by other processes (`wake.wake`): a run queued or stopped there
        starts or ends here at once. The poll stays the fallback while Redis is away."""
        backoff = 1.0
        while True:
            pubsub = aiim_redis.async_client().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(wake.channel())
                backoff = 1.0
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("assistant wake subscription lost (%s); retrying in %.0f s", type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                await asyncio.shield(pubsub.aclose())

    async def tick(self) -> None:
        now = time.monotonic()
        if self.tasks:
            ids = list(self.tasks)
            if now >= self._next_renew:
                alive = await in_worker(execution.renew)(owner=self.owner, run_ids=ids)
                self._next_renew = now + settings.ASSISTANT_LEASE_SECONDS / 3
            else:
                alive = await in_worker(execution.still_running)(owner=self.owner, run_ids=ids)
            for run_id in set(ids) - alive:
                task = self.tasks.get(run_id)
                if task is not None and not task.done():
                    self.lost.add(run_id)
                    task.cancel()  # closes the model request (see _attempt's finally)
        if now >= self._next_reap:
            self._next_reap = now + max(0.5, settings.ASSISTANT_LEASE_SECONDS / 3)
            if await in_worker(execution.expired_exists)():
                for run in await in_worker(execution.interrupt_expired)():
                    logger.info("run %s interrupted (its runner's lease expired)", run.id)
        free = settings.ASSISTANT_PROCESS_RUNS - len(self.tasks)
        woken, self._woken = self._woken, False
        if free > 0 and (woken or await in_worker(execution.queued_exists)()):
            for run, prepared in await in_worker(execution.claim_and_prepare)(owner=self.owner, limit=free):
                self._start(run, prepared)

    # -- one run ------------------------------------------------------------------------

    async def _execute(self, run: Run, prepared: Prepared | RunFailed, *, after_send: bool = False) -> None:
        progress = Progress()
        try:
            if after_send:
                # Handed over just before the send's reply: let the sender's ack and the
                # message's events go out before the model request takes the loop (~2 ms).
                await asyncio.sleep(0)
            await self._run(run, prepared, progress)
        except asyncio.CancelledError:
            if run.id in self.lost:  # stopped: the stop ended the run; count what was generated
                await in_worker(execution.record_usage)(run=run, owner=self.owner, usage=_usage(progress))
                return
            raise
        except LostRun:
            pass
        except Exception:
            logger.exception("run %s failed unexpectedly", run.id)
            await in_worker(execution.fail)(run_id=run.id, owner=self.owner, code="model_error", detail="Internal error while running.")
        finally:
            self.tasks.pop(run.id, None)
            self.lost.discard(run.id)
            self.wake()  # a slot is free: the next queued run may start

    async def _run(self, run: Run, prepared: Prepared | RunFailed, progress: Progress) -> None:
        if isinstance(prepared, RunFailed):
            await in_worker(execution.fail)(run_id=run.id, owner=self.owner, code=prepared.code, detail=prepared.detail)
            return
        progress.prompt_chars = sum(len(m["content"]) for m in prepared.messages)
        await self._publish(run, "thinking")
        deadline = time.monotonic() + settings.ASSISTANT_MAX_DURATION
        attempt = 0
        while True:
            try:
                await self._attempt(run, prepared, progress, deadline)
                break
            except ModelFailure as exc:
                logger.info("run %s attempt %d: %s (%s)", run.id, attempt + 1, exc.code, exc.detail)
                if progress.stored or not exc.retryable or attempt >= MAX_RETRIES or time.monotonic() >= deadline:
                    await self._flush(run, progress, force=True)
                    if not await in_worker(execution.fail)(
                        run_id=run.id, owner=self.owner, code=exc.code, detail=exc.detail, usage=_usage(progress)
                    ):
                        raise LostRun() from None
                    return
                attempt += 1
                await asyncio.sleep(settings.ASSISTANT_RETRY_BACKOFF * 2 ** (attempt - 1))
        # Completed: the rest of the text, the stream's end and the run's end in one transaction.
        usage, text = _usage(progress), "".join(progress.buffer)
        progress.buffer.clear()
        end = ChunkWrite(run_id=run.id, text=text, end=True, finish_reason=progress.finish_reason, usage=usage, start=bool(text) and not progress.stored)
        if not await self.writer.write(end):
            raise LostRun()

    def _client(self, prepared: Prepared) -> openai.AsyncOpenAI:
        key = (prepared.base_url, prepared.api_key)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) > 256:
                self._clients.clear()  # the old ones close with their connections when collected
            client = self._clients[key] = openai.AsyncOpenAI(
                base_url=prepared.base_url,
                api_key=prepared.api_key or "unused",  # servers without keys (Ollama) ignore it
                max_retries=0,  # retried here, and only before the first token
                timeout=settings.ASSISTANT_MAX_DURATION,
                # aiohttp's C parser reads the per-token stream for less CPU than httpcore's
                # pure-Python one (docs/assistants.md, "Cost").
                http_client=openai.DefaultAioHttpClient(),
            )
        return client

    async def _attempt(self, run: Run, prepared: Prepared, progress: Progress, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_limit = min(settings.ASSISTANT_FIRST_TOKEN_TIMEOUT, max(0.0, deadline - time.monotonic()))
        # The raw streaming response of the official client: its transport, auth and status
        # errors, but our own parse of the events. Its typed chunks cost ~0.1 ms of pydantic
        # per token, 70% of the server's CPU with 50 runs (docs/assistants.md, "Cost").
        request = self._client(prepared).chat.completions.with_streaming_response.create(
            model=prepared.model,
            # The history goes in as the body's own `messages`: the client's type-driven
            # transform of its `messages` argument costs ~0.15 ms of CPU per message, before
            # the request leaves (docs/assistants.md, "Cost").
            messages=[],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={**(prepared.params or {}), "messages": prepared.messages},  # params as given (temperature, ...)
        )
        try:
            response = await asyncio.wait_for(request.__aenter__(), first_limit)
        except TimeoutError:
            raise ModelFailure("model_timeout", "No response from the model in time.", retryable=True) from None
        except openai.APIStatusError as exc:
            raise _status_failure(exc) from None
        except openai.APIConnectionError:
            raise ModelFailure("model_unavailable", "The model endpoint cannot be reached.", retryable=True) from None
        queue: asyncio.Queue = asyncio.Queue()
        reader = loop.create_task(self._read(response, queue))
        try:
            await self._consume(run, progress, queue, started, deadline)
        finally:
            reader.cancel()
            # Closing the response closes its connection: the model server sees the client
            # go, and stops generating (a stop, a timeout, a failure).
            await asyncio.shield(response.close())

    @staticmethod
    async def _read(response: Any, queue: asyncio.Queue) -> None:
        try:
            async for data in sse_data(response_lines(response)):
                if data.startswith("[DONE]"):
                    break
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise ValueError("a stream event that is not an object")
                if chunk.get("error"):
                    raise ModelStreamError(chunk["error"])
                if chunk.get("usage"):
                    queue.put_nowait(("usage", chunk["usage"]))
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                    if reasoning:
                        queue.put_nowait(("reasoning", reasoning))
                    if delta.get("content"):
                        queue.put_nowait(("content", delta["content"]))
                    if choice.get("finish_reason"):
                        queue.put_nowait(("finish", choice["finish_reason"]))
            queue.put_nowait(("end", None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.info("model stream failed: %r", exc)
            queue.put_nowait(("error", exc))

    async def _consume(self, run: Run, progress: Progress, queue: asyncio.Queue, started: float, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        chunk_s = settings.ASSISTANT_CHUNK_MS / 1000
        last_token = started
        any_token = False
        while True:
            now = loop.time()
            limit = settings.ASSISTANT_IDLE_TIMEOUT if any_token else settings.ASSISTANT_FIRST_TOKEN_TIMEOUT
            model_due = min(last_token + limit, now + (deadline - time.monotonic()))
            wait = model_due - now
            if progress.buffer:
                wait = min(wait, progress.last_flush + chunk_s - now)
            try:
                items = [await asyncio.wait_for(queue.get(), max(0.0, wait))]
            except TimeoutError:
                if loop.time() < model_due:
                    await self._flush(run, progress, force=True)  # the coalescing window closed
                    continue
                if time.monotonic() >= deadline:
                    raise ModelFailure("model_timeout", "The reply took longer than ASSISTANT_MAX_DURATION.", retryable=False) from None
                detail = "The model stopped sending tokens." if any_token else "The model sent no first token in time."
                raise ModelFailure("model_timeout", detail, retryable=not progress.stored) from None
            # Everything that arrived meanwhile goes into this flush: when the database is
            # slower than the coalescing window, chunks grow instead of falling behind.
            while not queue.empty():
                items.append(queue.get_nowait())
            content = False
            for kind, value in items:
                if kind in ("content", "reasoning"):
                    any_token, last_token = True, loop.time()
                if kind == "content":
                    progress.buffer.append(value)
                    content = True
                elif kind == "reasoning" and not progress.stored:
                    progress.reasoning.append(value)
                elif kind == "usage":
                    progress.usage = value
                elif kind == "finish":
                    progress.finish_reason = value
                elif kind == "end":
                    if not progress.stored and not progress.buffer and progress.finish_reason is None:
                        raise ModelFailure("model_error", "The model's stream ended without a reply.", retryable=True)
                    return
                elif kind == "error":
                    await self._flush(run, progress, force=True)  # keep what arrived before the error
                    raise self._stream_failure(value, progress)
            if content:
                if not progress.generating:
                    progress.generating = True
                    await self._publish(run, "generating")
                await self._flush(run, progress)

    @staticmethod
    def _stream_failure(exc: Exception, progress: Progress) -> ModelFailure:
        if isinstance(exc, openai.APIStatusError):
            return _status_failure(exc)
        if isinstance(exc, openai.APIConnectionError | ModelConnectionLost):
            return ModelFailure("model_unavailable", "The connection to the model was lost.", retryable=True)
        if isinstance(exc, ValueError | AttributeError | TypeError | ModelStreamError):  # JSON that does not parse, an error event
            return ModelFailure("model_error", "The model sent a malformed stream.", retryable=True)
        return ModelFailure("model_error", f"The model's stream failed ({type(exc).__name__}).", retryable=True)

    async def _flush(self, run: Run, progress: Progress, *, force: bool = False) -> None:
        """Store the buffered text as one chunk: at once for the first token (the message
        appears), then at most every ASSISTANT_CHUNK_MS."""
        if not progress.buffer:
            return
        now = asyncio.get_running_loop().time()
        if progress.stored and not force and now - progress.last_flush < settings.ASSISTANT_CHUNK_MS / 1000:
            return
        text = "".join(progress.buffer)
        progress.buffer.clear()
        progress.last_flush = now
        try:
            reasoning = "" if progress.stored else "".join(progress.reasoning)
            ok = await self.writer.write(ChunkWrite(run_id=run.id, text=text, reasoning=reasoning, start=not progress.stored))
        except AiimError as exc:  # the reply outgrew MAX_MESSAGE_BYTES, the assistant left, ...
            raise ModelFailure(exc.code, exc.detail, retryable=False) from None
        if not ok:
            raise LostRun()
        progress.stored = True
        progress.text_len += len(text)

    async def _publish(self, run: Run, state: str) -> None:
        # From the loop, through the same hand-over as the committed events (in order).
        events.publish_all_now(
            [state_event(tenant=run.tenant, conversation_id=run.conversation_id, assistant_id=run.assistant_id, run_id=run.id, state=state)]
        )


# -- starting it ----------------------------------------------------------------------

_runners: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


def ensure_running() -> None:
    loop = asyncio.get_running_loop()
    task = _runners.get(loop)
    if task is None or task.done():
        for old in [lp for lp in _runners if lp.is_closed()]:
            del _runners[old]
        # A fresh context: the runner outlives the request that started it.
        _runners[loop] = loop.create_task(Runner().run_forever(), name="aiim-assistant-runner", context=contextvars.Context())


class StartRunner:
    """ASGI wrapper: the first call of any kind starts this process's runner (Daphne has no
    start-up hook), when ASSISTANT_RUNNER is inline."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if settings.ASSISTANT_RUNNER == "inline":
            ensure_running()
        return await self.app(scope, receive, send)
