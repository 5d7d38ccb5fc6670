"""`manage.py mint_token --user U [--tenant T] [--ttl S]`."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import CommandError, call_command

from aiim_project.core.auth import decode_token


def mint(*args: str) -> str:
    out = io.StringIO()
    call_command("mint_token", *args, stdout=out)
    return out.getvalue().strip()


def test_mint_token_for_a_user_of_a_tenant():
    principal = decode_token(mint("--user", "u1", "--tenant", "acme", "--ttl", "120"))
    assert (principal.user_id, principal.tenant) == ("u1", "acme")
    assert 110 < principal.expires_at - time.time() <= 120


def test_mint_token_defaults():
    principal = decode_token(mint("--user", "u1"))
    assert principal.tenant == "default"
    assert 3590 < principal.expires_at - time.time() <= 3600


def test_mint_token_ttl_zero_never_expires():
    assert decode_token(mint("--user", "u1", "--ttl", "0")).expires_at is None


def test_mint_token_needs_a_user():
    with pytest.raises(CommandError):
        call_command("mint_token")


@pytest.mark.django_db
def test_minted_token_is_accepted_by_the_api(client):
    token = mint("--user", "op", "--tenant", "acme")
    response = client.get("/api/aiim/conversations", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200 and response.json() == {"conversations": [], "next_cursor": None}
