"""The one family of domain errors, each with a stable `code` and an HTTP status. Exactly two
adapters render them: `aiim_project.errors.rest_exception_handler` and the gateway's error frame.
"""

from __future__ import annotations

from typing import Any


class AiimError(Exception):
    code = "error"
    status = 500
    default_detail = "Server error."

    def __init__(self, detail: str | None = None, *, errors: dict[str, list[str]] | None = None, **extra: Any):
        self.detail = detail or self.default_detail
        self.errors = errors
        self.extra = extra
        super().__init__(self.detail)


class ServerError(AiimError):
    """A bug or anything else no other code names: the adapters log it and say no more."""

    code, status, default_detail = "server_error", 500, "Server error."


class Invalid(AiimError):
    code, status, default_detail = "invalid", 400, "Invalid request."


class NotAuthenticated(AiimError):
    code, status, default_detail = "not_authenticated", 401, "Authentication credentials were not provided."


class TokenInvalid(AiimError):
    code, status, default_detail = "token_invalid", 401, "Token is invalid."


class TokenExpired(AiimError):
    code, status, default_detail = "token_expired", 401, "Token has expired."


class Forbidden(AiimError):
    code, status, default_detail = "forbidden", 403, "You are not allowed to do this."


class TenantMismatch(AiimError):
    code, status, default_detail = "tenant_mismatch", 403, "tenant_id does not match the token's tenant."


class NotFound(AiimError):
    code, status, default_detail = "not_found", 404, "Not found."


class Conflict(AiimError):
    code, status, default_detail = "conflict", 409, "Conflict."


class TooLarge(AiimError):
    code, status, default_detail = "too_large", 413, "Content is too large."


class RateLimited(AiimError):
    code, status, default_detail = "rate_limited", 429, "Too many requests."

    def __init__(self, detail: str | None = None, *, retry_after: float = 1.0, **extra: Any):
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class Unavailable(AiimError):
    code, status, default_detail = "unavailable", 503, "A required dependency is unavailable. Try again shortly."

    def __init__(self, detail: str | None = None, *, retry_after: float = 1.0, **extra: Any):
        super().__init__(detail, **extra)
        self.retry_after = retry_after


def dependency_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a backing service (database, Redis) is down, not a bug."""
    import django.db
    import redis.exceptions

    return (
        django.db.OperationalError,
        django.db.InterfaceError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        ConnectionError,
        TimeoutError,
    )


def as_aiim_error(exc: BaseException) -> AiimError | None:
    """Map an exception to the domain error an adapter should render, or None for a bug."""
    if isinstance(exc, AiimError):
        return exc
    import django.db

    if isinstance(exc, django.db.DataError):
        # The database refused a value the checks let through (e.g. a NUL character in an id
        # on PostgreSQL): the client's input, not a server fault, on REST and WebSocket alike.
        return Invalid("A value in the request cannot be stored.")
    if isinstance(exc, dependency_error_types()):
        return Unavailable()
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover - psycopg is always installed
        return None
    if isinstance(exc, PoolTimeout):
        return Unavailable()
    return None
