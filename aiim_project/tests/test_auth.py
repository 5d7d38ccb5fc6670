"""JWT principals: `sub` is the user, `tenant` the tenant (default "default"), `exp` honoured."""

from __future__ import annotations

import time

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from aiim_project.auth import Principal, decode_token, mint_token
from messaging.errors import NotAuthenticated, TokenExpired, TokenInvalid

pytestmark = pytest.mark.django_db

URL = "/api/aiim/conversations"


def signed(claims: dict, key: str | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, settings.JWT_SECRET if key is None else key, algorithm=algorithm)


def get(token: str | None, scheme: str = "Bearer"):
    client = APIClient()
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"{scheme} {token}".strip())
    return client.get(URL)


def test_minted_token_round_trips():
    principal = decode_token(mint_token(user_id="u-1", tenant="acme", ttl=60))
    assert (principal.user_id, principal.tenant) == ("u-1", "acme")
    assert principal.expires_at is not None and 50 < principal.expires_at - time.time() <= 60


def test_tenant_defaults_to_default_and_exp_is_optional():
    principal = decode_token(signed({"sub": "bob"}))
    assert principal == Principal(tenant="default", user_id="bob", expires_at=None)


@pytest.mark.parametrize(
    "token, error",
    [
        ("", NotAuthenticated),
        (None, TokenInvalid),  # alg none, filled in below
        ("forged", TokenInvalid),
        ("expired", TokenExpired),
        ("no-sub", TokenInvalid),
        ("empty-sub", TokenInvalid),
        ("int-sub", TokenInvalid),
        ("bad-tenant", TokenInvalid),
        ("not.a.token", TokenInvalid),
        ("hs384", TokenInvalid),
    ],
)
def test_decode_refuses(token, error):
    token = {
        None: jwt.encode({"sub": "alice"}, None, algorithm="none"),
        "forged": signed({"sub": "alice"}, key="wrong-secret-" * 4),
        "expired": signed({"sub": "alice", "exp": int(time.time()) - 5}),
        "no-sub": signed({"tenant": "default"}),
        "empty-sub": signed({"sub": ""}),
        "int-sub": signed({"sub": 42}),
        "bad-tenant": signed({"sub": "alice", "tenant": ["x"]}),
        "hs384": signed({"sub": "alice"}, algorithm="HS384"),
    }.get(token, token)
    with pytest.raises(error):
        decode_token(token)


@pytest.mark.parametrize(
    "make, code",
    [
        (lambda: None, "not_authenticated"),
        (lambda: jwt.encode({"sub": "alice"}, None, algorithm="none"), "token_invalid"),
        (lambda: signed({"sub": "alice"}, key="wrong-secret-" * 4), "token_invalid"),
        (lambda: signed({"sub": "alice", "exp": int(time.time()) - 5}), "token_expired"),
        (lambda: signed({"tenant": "default"}), "token_invalid"),
    ],
)
def test_rest_answers_401_with_the_right_code(make, code):
    response = get(make())
    assert response.status_code == 401
    assert response.json()["code"] == code and response.json()["detail"]
    assert response["WWW-Authenticate"] == 'Bearer realm="aiim"'


@pytest.mark.parametrize("header", ["Token abc", "Bearer", "Bearer a b", "Basic dXNlcjpwYXNz"])
def test_malformed_authorization_header_is_401(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(URL)
    assert response.status_code == 401 and response.json()["code"] == "token_invalid"


def test_valid_token_sees_its_own_tenant_only(make_conversation):
    make_conversation("alice", ["bob"], tenant="acme")
    make_conversation("alice", ["bob"], tenant="default")
    listed = get(signed({"sub": "alice", "tenant": "acme"})).json()["conversations"]
    assert len(listed) == 1
    assert get(signed({"sub": "alice"})).json()["conversations"][0]["conversation_id"] != listed[0]["conversation_id"]
