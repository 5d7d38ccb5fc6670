"""JWT principals: `sub` is the user, `tenant` the tenant (default "default"), `exp` honoured."""

from __future__ import annotations

import time

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from aiim_project.core.auth import Principal, decode_token, mint_token
from aiim_project.core.errors import NotAuthenticated, TokenExpired, TokenInvalid

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


@pytest.fixture
def rs256(settings):
    """Tokens from an external identity provider, verified with its public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from aiim_project.core import auth

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    settings.JWT_ALGORITHM, settings.JWT_PUBLIC_KEY = "RS256", public_pem
    auth._backend.cache_clear()
    yield private, public_pem
    settings.JWT_ALGORITHM, settings.JWT_PUBLIC_KEY = "HS256", ""
    auth._backend.cache_clear()


def test_rs256_tokens_from_an_identity_provider(rs256):
    private, public_pem = rs256
    principal = decode_token(jwt.encode({"sub": "idp-user", "tenant": "acme"}, private, algorithm="RS256"))
    assert (principal.user_id, principal.tenant) == ("idp-user", "acme")
    with pytest.raises(TokenInvalid):  # our own HS256 secret no longer signs anything
        decode_token(signed({"sub": "alice"}))
    with pytest.raises(TokenInvalid):  # algorithm confusion: the public key used as an HMAC secret
        decode_token(hs256_by_hand({"sub": "alice"}, public_pem.encode()))


def hs256_by_hand(claims: dict, key: bytes) -> str:
    """PyJWT refuses to sign with a PEM key as HMAC secret; an attacker would not."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    return (signing_input + b"." + b64(hmac.new(key, signing_input, hashlib.sha256).digest())).decode()


# --- the verified-token cache -------------------------------------------------------------


def test_a_cached_token_still_expires_at_its_exp(monkeypatch):
    from aiim_project.core import auth

    exp = int(time.time()) + 100
    token = signed({"sub": "alice", "exp": exp})
    assert decode_token(token).user_id == "alice"
    assert token in auth._verified_for(auth._backend())
    monkeypatch.setattr(auth.time, "time", lambda: exp - 0.5)
    assert decode_token(token).user_id == "alice"  # from the cache, still valid
    monkeypatch.setattr(auth.time, "time", lambda: float(exp))  # PyJWT: expired once exp <= now
    with pytest.raises(TokenExpired):
        decode_token(token)
    assert token not in auth._verified_for(auth._backend())


def test_a_fractional_exp_expires_as_pyjwt_counts_it(monkeypatch):
    from aiim_project.core import auth

    exp = int(time.time()) + 100
    token = signed({"sub": "alice", "exp": exp + 0.9})
    decode_token(token)
    monkeypatch.setattr(auth.time, "time", lambda: exp + 0.1)  # int(exp) has passed
    with pytest.raises(TokenExpired):
        decode_token(token)


def test_only_the_exact_verified_text_is_cached():
    good = signed({"sub": "alice", "exp": int(time.time()) + 100})
    decode_token(good)
    header, payload, signature = good.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(TokenInvalid):
        decode_token(forged)
    other_key = signed({"sub": "alice", "exp": int(time.time()) + 100}, key="not-the-secret-0123456789-0123456789")
    with pytest.raises(TokenInvalid):
        decode_token(other_key)
    with pytest.raises(TokenInvalid):  # refused tokens are not remembered either: refused again
        decode_token(other_key)


def test_a_new_key_starts_an_empty_cache(rs256):
    from aiim_project.core import auth

    assert auth._verified_for(auth._backend()) == {}


def test_the_cache_is_bounded(monkeypatch):
    from aiim_project.core import auth

    monkeypatch.setattr(auth, "_VERIFIED_MAX", 3)
    tokens = [signed({"sub": f"u{i}"}) for i in range(7)]
    for t in tokens:
        decode_token(t)
        assert len(auth._verified_for(auth._backend())) <= 3
    assert [decode_token(t).user_id for t in tokens] == [f"u{i}" for i in range(7)]
