"""The AI SDK's chat endpoints (`useChat` with `DefaultChatTransport`): a run's reply as a
UI message stream (docs/protocol.md 7.4).

A run creates its reply message with its first token, so the stream first waits for that
message on the event loop: the waiter joins the conversation's group on the process hub
FIRST, then reads the run row; after that the `message.created` event of the reply (its
`client_msg_id` is `run:<run id>`) gives the message id, and an `assistant.state` event of
the run (idle: ended) makes it read the row again. The row is also read again after a
channel-layer reconnect and each heartbeat (the same safety net as the message follower),
never in a polling loop. Then the reply is streamed by `message_stream.ui_message_stream`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings

from aiim_project.core import events
from aiim_project.core.db import in_worker
from aiim_project.core.errors import Invalid, as_aiim_error
from aiim_project.gateway import delivery
from aiim_project.gateway.hub import get_hub
from assistants import selectors as run_selectors

from . import encoding as sse
from .message_stream import ui_message_stream
from .uimessage import UIMessageEncoder

SUBMIT, REGENERATE = "submit-message", "regenerate-message"
MAX_ID = 64


@dataclass(frozen=True)
class ChatRequest:
    conversation_id: str
    trigger: str
    client_msg_id: str | None  # the last user UI message's id (submit only)
    text: str
    assistant_id: str | None


def _id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID or "\x00" in value:
        raise Invalid(f"{field} must be a non-empty string of at most {MAX_ID} characters.", errors={field: ["Invalid."]})
    return value


def parse_chat_body(body: Any) -> ChatRequest:
    """The body DefaultChatTransport posts: {id, messages, trigger, messageId?} (+ assistant_id).
    Only the last `user` message counts: AIIM holds the history."""
    if not isinstance(body, dict):
        raise Invalid("The body must be a JSON object.")
    conversation_id = _id(body.get("id"), "id")
    trigger = body.get("trigger", SUBMIT)
    if trigger not in (SUBMIT, REGENERATE):
        raise Invalid(f"trigger must be {SUBMIT!r} or {REGENERATE!r}.", errors={"trigger": ["Invalid choice."]})
    assistant_id = body.get("assistant_id")
    if assistant_id is not None:
        assistant_id = _id(assistant_id, "assistant_id")
    if trigger == REGENERATE:
        return ChatRequest(conversation_id, trigger, None, "", assistant_id)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise Invalid("messages must be a list of UI messages.", errors={"messages": ["Expected a list."]})
    last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    if last is None:
        raise Invalid("messages holds no user message.", errors={"messages": ["No user message."]})
    parts = last.get("parts") if isinstance(last.get("parts"), list) else []
    text = "".join(p["text"] for p in parts if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
    if not text.strip():
        raise Invalid("The user message has no text.", errors={"messages": ["No text part."]})
    return ChatRequest(conversation_id, trigger, _id(last.get("id"), "messages[-1].id"), text, assistant_id)


class ReplyWaiter(sse.Outbox):
    """A hub member until the run's reply message exists (or the run ended without one)."""

    def __init__(self, *, tenant: str, conversation_id: str, run_id: str) -> None:
        super().__init__()
        self.group = events.conversation_group(tenant, conversation_id)
        self.run_id = run_id
        self.message_id: str | None = None
        self.recheck = False

    def hub_event(self, message: dict, wire: Any) -> int:
        kind = message.get("event")
        if kind == "message.created" and self.message_id is None:
            created = orjson.loads(message["frame"])["data"].get("message") or {}
            if created.get("client_msg_id") == f"run:{self.run_id}":
                self.message_id = created.get("message_id")
                self.wake.set()
        elif kind == "assistant.state" and orjson.loads(message["frame"])["data"].get("run_id") == self.run_id:
            self.recheck = True
            self.wake.set()
        return 0

    def hub_resync(self) -> None:
        self.recheck = True
        self.wake.set()


def _ended_without_reply(run) -> bytes:
    """A run that ended before its first token: an empty UI message that says how."""
    encoder = UIMessageEncoder("", {"run_id": run.id, "state": run.state})
    if run.state == "stopped":
        return encoder.end("stopped")
    if run.state == "completed":
        return encoder.end("completed")
    return encoder.fail(run.error_detail or "The reply failed.")


async def run_reply_stream(
    *, tenant: str, user_id: str, conversation_id: str, run_id: str, expires_at: float | None, load_chunks: delivery.ChunkLoader | None
) -> AsyncIterator[bytes]:
    """The response body of a chat stream: nothing until the reply exists, then the reply
    from its start (stored text, then live) as `ui_message_stream` sends it."""
    waiter = ReplyWaiter(tenant=tenant, conversation_id=conversation_id, run_id=run_id)
    hub = get_hub()
    message_id = None
    try:
        try:
            await hub.join(waiter.group, waiter)
            while waiter.message_id is None:
                waiter.recheck = False
                run = await in_worker(run_selectors.run_progress)(run_id=run_id)
                if run is not None and run.reply_message_id:
                    waiter.message_id = run.reply_message_id
                    break
                if run is None or run.state not in ("queued", "running"):
                    yield _ended_without_reply(run) if run is not None else UIMessageEncoder("").fail("The run is gone.")
                    return
                while waiter.message_id is None and not waiter.recheck:
                    wait = settings.SSE_HEARTBEAT_SECONDS if expires_at is None else min(settings.SSE_HEARTBEAT_SECONDS, expires_at - time.time())
                    if wait <= 0:
                        yield UIMessageEncoder("").fail("The token has expired.")
                        return
                    waiter.wake.clear()
                    try:
                        await asyncio.wait_for(waiter.wake.wait(), wait)
                    except TimeoutError:
                        yield sse.HEARTBEAT
                        break  # read the row again
        except Exception as exc:  # Redis or the database down while waiting
            err = as_aiim_error(exc)
            if err is None:
                raise
            yield UIMessageEncoder("").fail(err.detail)
            return
        message_id = waiter.message_id
    finally:
        hub.leave_soon(waiter.group, waiter)
    async for chunk in ui_message_stream(
        tenant=tenant, user_id=user_id, conversation_id=conversation_id, message_id=message_id, expires_at=expires_at, load_chunks=load_chunks
    ):
        yield chunk
