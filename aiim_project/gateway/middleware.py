"""ASGI middleware: the WebSocket's token (`?token=<JWT>`, subprotocols `bearer, <JWT>`, or the
original AIIM's bare `<JWT>` subprotocol, echoed back) becomes a principal. A bad token is
accepted, then closed with 4401: the only way a browser sees why.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from aiim_project.core.auth import decode_token
from aiim_project.core.errors import AiimError

BEARER = "bearer"


def token_from_scope(scope: dict) -> tuple[str, str | None]:
    """(token, the subprotocol the handshake selects: "bearer", the bare token, or None)."""
    subprotocols = list(scope.get("subprotocols") or [])
    if BEARER in subprotocols:
        others = [p for p in subprotocols if p != BEARER]
        return (others[0] if others else ""), BEARER
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    token = (query.get("token") or [""])[0]
    if not token and len(subprotocols) == 1:
        return subprotocols[0], subprotocols[0]
    return token, None


class JWTAuthMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            token, subprotocol = token_from_scope(scope)
            principal, error = None, None
            try:
                principal = decode_token(token)
            except AiimError as exc:
                error = exc
            scope = dict(scope, principal=principal, auth_error=error, accept_subprotocol=subprotocol)
        return await self.app(scope, receive, send)
