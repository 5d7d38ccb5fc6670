"""Daphne's access log without tokens.

Daphne's access log (on at its default verbosity) prints each HTTP request's URI with its
query string, and the GET stream endpoints and the WebSocket take `?token=<JWT>` (browsers'
EventSource and WebSocket cannot send headers). `install` wraps the access log writer so
the value of every `token` parameter is printed as `[redacted]`. The production command
line turns the access log off anyway (--verbosity 0); this keeps a token out of it when an
operator turns it on.
"""

from __future__ import annotations

import re

from daphne import access

from aiim_project.logging import REDACTED

_TOKEN_PARAM = re.compile(r"([?&](?:access_)?token=)[^&#\s]*", re.IGNORECASE)


def redact(path: str) -> str:
    return _TOKEN_PARAM.sub(lambda m: m.group(1) + REDACTED, path)


def install() -> None:
    generator = access.AccessLogGenerator
    if getattr(generator, "_aiim_redacting", False):
        return
    original = generator.__call__

    def __call__(self, protocol, action, details):
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        return original(self, protocol, action, details)

    generator.__call__ = __call__
    generator._aiim_redacting = True
