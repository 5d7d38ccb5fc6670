"""Tokens an attacker builds by hand (unsigned, HMAC-signed with a key PyJWT would refuse),
for the REST and WebSocket auth attack tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def hs256_with_key(claims: dict, key: bytes) -> str:
    """HS256 by hand: PyJWT refuses to use a PEM key as an HMAC secret, an attacker does not."""
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": "alice", "tenant": "default", "iat": now, "exp": now + 3600, **extra}


def signed_with_another_key(user_id: str = "alice", tenant: str = "default") -> str:
    """A well-formed token signed with a key that is not JWT_SECRET."""
    import jwt

    return jwt.encode({"sub": user_id, "tenant": tenant}, "not-the-secret-" * 4, algorithm="HS256")
