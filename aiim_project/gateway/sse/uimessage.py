"""The AI SDK's UI message stream (protocol v1), for one assistant message.

The parts and their order are those the `ai` npm package's parser accepts
(`uiMessageChunkSchema`, `readUIMessageStream`): `start` (messageId, messageMetadata),
`start-step`, optionally `reasoning-start/delta/end`, `text-start/delta/end`,
`finish-step`, then by how the message ended:

* completed: `finish` with finishReason "stop";
* stopped (a user stopped the run): `abort`, then `finish`;
* failed, aborted (the model failed, the stream was abandoned): `error`;

and the SSE terminator `data: [DONE]`. The SDK's standard parts take no unknown keys in
every major version, so AIIM's own fields (seq, run_id, usage, state) ride in
`messageMetadata` of `start` and `finish`.

`UIMessageEncoder` knows nothing about where the text comes from: the message stream
endpoint feeds it a stored message and its live chunks; the chat endpoints can feed it a
run's reply the same way.
"""

from __future__ import annotations

from typing import Any

from . import encoding as sse

CONTENT_TYPE = "text/event-stream"
# The AI SDK's UI_MESSAGE_STREAM_HEADERS (less `connection`, which is the server's business).
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}
DONE = b"data: [DONE]\n\n"

TEXT_ID = "text-0"
REASONING_ID = "reasoning-0"
ERROR_TEXT = {
    "failed": "The reply failed.",
    "aborted": "The reply was abandoned before it completed.",
}


def end_kind(state: str | None) -> str:
    """How a message in stream state `state` ends its UI message stream."""
    if state in (None, "completed"):
        return "finish"
    if state == "stopped":
        return "abort"
    return "error"


class UIMessageEncoder:
    """Builds the parts of one UI message in protocol order; each method returns the SSE
    bytes of the parts it adds (b"" when it adds none)."""

    def __init__(self, message_id: str, metadata: dict[str, Any] | None = None) -> None:
        self.message_id = message_id
        self.metadata = metadata or {}
        self.started = False
        self.ended = False
        self._open: str | None = None  # "reasoning" or "text" while its part is open
        self._text_done = False
        self._reasoning_done = False

    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        start: dict[str, Any] = {"type": "start"}
        if self.message_id:  # "": a chat run that ended before its reply message existed
            start["messageId"] = self.message_id
        if self.metadata:
            start["messageMetadata"] = self.metadata
        return sse.data_only(start) + sse.data_only({"type": "start-step"})

    def reasoning(self, delta: str) -> bytes:
        """Reasoning goes before the text; once the text has begun, more is dropped (the
        SDK would show it after the answer)."""
        if not delta or self._text_done or self._open == "text" or self._reasoning_done:
            return b""
        out = self.start()
        if self._open != "reasoning":
            self._open = "reasoning"
            out += sse.data_only({"type": "reasoning-start", "id": REASONING_ID})
        return out + sse.data_only({"type": "reasoning-delta", "id": REASONING_ID, "delta": delta})

    def text(self, delta: str) -> bytes:
        if not delta or self.ended:
            return b""
        out = self.start()
        if self._open != "text":
            out += self._close()
            self._open = "text"
            out += sse.data_only({"type": "text-start", "id": TEXT_ID})
        return out + sse.data_only({"type": "text-delta", "id": TEXT_ID, "delta": delta})

    def _close(self) -> bytes:
        if self._open == "reasoning":
            self._open, self._reasoning_done = None, True
            return sse.data_only({"type": "reasoning-end", "id": REASONING_ID})
        if self._open == "text":
            self._open, self._text_done = None, True
            return sse.data_only({"type": "text-end", "id": TEXT_ID})
        return b""

    def end(self, state: str | None, *, metadata: dict[str, Any] | None = None, error_text: str | None = None) -> bytes:
        """The closing parts for a message that ended in `state`, then [DONE]."""
        if self.ended:
            return b""
        out = self.start() + self._close() + sse.data_only({"type": "finish-step"})
        self.ended = True
        final = {**self.metadata, **(metadata or {})}
        kind = end_kind(state)
        if kind == "error":
            out += sse.data_only({"type": "error", "errorText": error_text or ERROR_TEXT.get(state or "", "The reply failed.")})
            return out + DONE
        if kind == "abort":
            out += sse.data_only({"type": "abort"})
        finish: dict[str, Any] = {"type": "finish"}
        if kind == "finish":
            finish["finishReason"] = "stop"
        if final:
            finish["messageMetadata"] = final
        return out + sse.data_only(finish) + DONE

    def fail(self, error_text: str) -> bytes:
        """End with an error the stream itself hit (access revoked, server error)."""
        return self.end("failed", error_text=error_text)
