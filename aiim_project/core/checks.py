"""The rules every app applies to ids and to access, written once. A missing conversation and
another tenant's are the same 404; a non-member of the caller's tenant gets 403 (protocol.md 2.2).
"""

from __future__ import annotations

from typing import Any

from .errors import Forbidden, Invalid, NotFound, TenantMismatch

# User ids, tenants and client_msg_ids (what apps choose).
MAX_ID_LENGTH = 200
# Conversation and message ids (what AIIM generates, with room to spare).
MAX_OBJECT_ID_LENGTH = 64


def is_id(value: Any, max_length: int = MAX_ID_LENGTH) -> bool:
    """A non-empty string, at most `max_length` long, with no NUL (PostgreSQL refuses one)."""
    return isinstance(value, str) and 0 < len(value) <= max_length and "\x00" not in value


def check_id(value: Any, field: str, *, max_length: int = MAX_ID_LENGTH, detail: str | None = None, error: str = "Invalid.") -> str:
    if not is_id(value, max_length):
        raise Invalid(detail or f"{field} must be a non-empty string.", errors={field: [error]})
    return value


def check_user_id(value: Any, field: str) -> str:
    return check_id(
        value, field, detail=f"'{field}' must be a non-empty string of at most {MAX_ID_LENGTH} characters.", error="Invalid user id."
    )


def check_tenant(tenant: str, tenant_id: Any) -> None:
    """A tenant id in a request body is never trusted: it must match the token's."""
    if tenant_id is not None and tenant_id != tenant:
        raise TenantMismatch()


def check_access(*, found: bool, is_member: bool, hide_membership: bool = False) -> None:
    """The one access rule for a conversation (see the module). `hide_membership`: a
    non-member gets the same 404 as a missing conversation (the chat endpoints' contract)."""
    if not found or (hide_membership and not is_member):
        raise NotFound("Conversation not found.")
    if not is_member:
        raise not_a_member()


def not_a_member() -> Forbidden:
    return Forbidden("You are not a member of this conversation.")
