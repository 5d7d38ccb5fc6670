"""Client frames in, error frames out: the WebSocket adapter of the error family."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.conf import settings

from aiim_project.core.errors import AiimError, Invalid, ServerError, TooLarge, as_aiim_error
from aiim_project.core.metrics import ERRORS

logger = logging.getLogger("aiim.gateway")

# Room for the envelope around the largest allowed content.
FRAME_OVERHEAD = 16 * 1024


def decode(message: dict) -> dict:
    """The frame of a `websocket.receive` message, or Invalid / TooLarge."""
    text = message.get("text")
    if text is None:
        raise Invalid("Frames must be JSON text, not binary.")
    if len(text) > settings.MAX_MESSAGE_BYTES + FRAME_OVERHEAD:
        raise TooLarge(f"Frame is over {settings.MAX_MESSAGE_BYTES + FRAME_OVERHEAD} characters.")
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Invalid("Frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise Invalid("Frame must be a JSON object.")
    return frame


def peek(message: dict) -> dict | None:
    """A queued message decoded as a frame, or None if it is not a valid one (no metric
    counted, no error sent: the ordinary path does that when it handles it)."""
    if message.get("type") != "websocket.receive":
        return None
    try:
        return decode(message)
    except AiimError:
        return None


def check_required(frame: dict, required: dict[str, type | tuple[type, ...]]) -> None:
    errors: dict[str, list[str]] = {}
    for name, expected in required.items():
        if name not in frame:
            errors[name] = ["This field is required."]
            continue
        value = frame[name]
        kinds = expected if isinstance(expected, tuple) else (expected,)
        # bool is an int in Python, never in a frame.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds and object not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            errors[name] = [f"Expected {names}."]
        elif isinstance(value, str) and not value and object not in kinds:
            errors[name] = ["May not be empty."]
    if errors:
        raise Invalid(f"Invalid fields: {', '.join(sorted(errors))}.", errors=errors)


def has_required(frame: dict, required: dict[str, type | tuple[type, ...]]) -> bool:
    try:
        check_required(frame, required)
    except Invalid:
        return False
    return True


def error_frame(exc: BaseException, frame: dict | None) -> tuple[AiimError, str]:
    """The error frame answering `frame` (None: it could not be parsed) that raised `exc`."""
    err = as_aiim_error(exc)
    if err is None:
        logger.exception("ws frame handler failed (type=%s)", frame.get("type") if frame else None)
        err = ServerError()
    body: dict[str, Any] = {**err.extra, "type": "error", "code": err.code, "message": err.detail}
    if err.errors:
        body["errors"] = err.errors
    if frame is not None:
        if isinstance(frame.get("req_id"), str):
            body["req_id"] = frame["req_id"]
        if isinstance(frame.get("conversation_id"), str):
            body["conversation_id"] = frame["conversation_id"]
    ERRORS.labels(err.code, "ws").inc()
    return err, orjson.dumps(body).decode()
