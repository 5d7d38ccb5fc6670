"""Who is calling: a signed JWT names the user (`sub`) and the tenant (`tenant`). AIIM keeps no
user rows; the principal lives only as long as the request or connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenBackendExpiredToken

from aiim_project.core.checks import MAX_ID_LENGTH, is_id
from aiim_project.core.errors import NotAuthenticated, TokenExpired, TokenInvalid


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    user_id: str
    expires_at: float | None = None
    # The token's optional `role` claim; "admin" may manage the tenant's assistants.
    role: str | None = None

    # DRF treats request.user as a user object.
    is_authenticated = True
    is_anonymous = False
    is_active = True

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def pk(self) -> str:
        return f"{self.tenant}:{self.user_id}"

    def __str__(self) -> str:
        # What the browsable API shows as the signed-in user.
        return f"{self.user_id} ({self.tenant})"


@lru_cache(maxsize=1)
def _backend() -> TokenBackend:
    algorithm = settings.JWT_ALGORITHM
    verifying_key = settings.JWT_PUBLIC_KEY if not algorithm.startswith("HS") else ""
    return TokenBackend(algorithm, signing_key=settings.JWT_SECRET, verifying_key=verifying_key)


# Verified tokens by exact text, rechecking only the expiry (nbf/iat only become more valid):
# PyJWT's verification is a large part of a request's CPU, and a client repeats its token.
_VERIFIED_MAX = 4096


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    exp: int | None  # as PyJWT compares it: int(claims["exp"])


@lru_cache(maxsize=1)
def _verified_for(backend: TokenBackend) -> dict[str, _Verified]:
    """One cache per token backend: a new key or algorithm (tests clear `_backend`) starts empty."""
    return {}


def decode_token(token: str) -> Principal:
    if not token:
        raise NotAuthenticated()
    backend = _backend()
    verified = _verified_for(backend)
    hit = verified.get(token)
    if hit is None:
        hit = _verify(backend, token)
        if len(verified) >= _VERIFIED_MAX:
            verified.clear()
        verified[token] = hit
    # PyJWT's own test (leeway 0): expired once exp <= now.
    elif hit.exp is not None and hit.exp <= time.time():
        verified.pop(token, None)
        raise TokenExpired()
    return hit.principal


def _verify(backend: TokenBackend, token: str) -> _Verified:
    try:
        # PyJWT pins the algorithm list to the configured one, so `alg: none` and
        # algorithm-confusion tokens fail signature verification here.
        claims = backend.decode(token, verify=True)
    except TokenBackendExpiredToken:
        raise TokenExpired() from None
    except TokenBackendError:
        raise TokenInvalid() from None
    sub = claims.get("sub")
    tenant = claims.get("tenant", settings.JWT_DEFAULT_TENANT)
    if not is_id(sub):
        raise TokenInvalid("Token has no valid 'sub' claim.")
    if not is_id(tenant):
        raise TokenInvalid("Token has no valid 'tenant' claim.")
    exp = claims.get("exp")
    role = claims.get("role")
    if role is not None and (not isinstance(role, str) or len(role) > MAX_ID_LENGTH):
        raise TokenInvalid("Token has an invalid 'role' claim.")
    principal = Principal(tenant=tenant, user_id=sub, expires_at=float(exp) if exp is not None else None, role=role)
    return _Verified(principal, int(exp) if exp is not None else None)


def mint_token(*, user_id: str, tenant: str = "default", ttl: int | None = 3600, role: str | None = None) -> str:
    now = int(time.time())
    claims: dict = {"sub": user_id, "tenant": tenant, "iat": now}
    if role:
        claims["role"] = role
    if ttl:
        claims["exp"] = now + ttl
    return _backend().encode(claims)


class JWTPrincipalAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword or len(header) != 2:
            raise TokenInvalid("Authorization header must be 'Bearer <token>'.")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise TokenInvalid() from None
        principal = decode_token(token)
        return principal, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="aiim"'
