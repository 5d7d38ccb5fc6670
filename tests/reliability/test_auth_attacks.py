"""Forged, expired and malformed tokens over REST. Each attack must answer 401 with the
error body of docs/protocol.md section 2, never reach a view, never a 500."""

from __future__ import annotations

import time

import jwt
import pytest
from rest_framework.test import APIClient

from aiim_project.core import auth
from tests.support.tokens import claims, hs256_with_key, unsigned

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]


@pytest.fixture
def fresh_backend():
    auth._backend.cache_clear()
    yield
    auth._backend.cache_clear()


@pytest.fixture
def rs256(settings, rsa_keys, fresh_backend):
    private, public = rsa_keys
    settings.JWT_ALGORITHM = "RS256"
    settings.JWT_PUBLIC_KEY = public
    return private, public


def call(token: str | None, *, raw_header: str | None = None):
    client = APIClient()
    if raw_header is not None:
        client.credentials(HTTP_AUTHORIZATION=raw_header)
    elif token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/aiim/conversations")


def assert_rejected(response, code: str) -> None:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_valid_token_is_the_control(settings, fresh_backend):
    token = jwt.encode(claims(), settings.JWT_SECRET, algorithm="HS256")
    assert call(token).status_code == 200


@pytest.mark.parametrize(
    "make, code",
    [
        (lambda secret: unsigned({"alg": "none", "typ": "JWT"}, claims()), "token_invalid"),
        (lambda secret: unsigned({"alg": "None", "typ": "JWT"}, claims()), "token_invalid"),
        (lambda secret: unsigned({"alg": "HS256", "typ": "JWT"}, claims()), "token_invalid"),
        (lambda secret: jwt.encode(claims(), "not-the-secret-but-long-enough-0123456789", algorithm="HS256"), "token_invalid"),
        (lambda secret: jwt.encode(claims(), secret, algorithm="HS512"), "token_invalid"),
        (lambda secret: jwt.encode(claims(exp=int(time.time()) - 5), secret, algorithm="HS256"), "token_expired"),
        (lambda secret: jwt.encode(claims(nbf=int(time.time()) + 600), secret, algorithm="HS256"), "token_invalid"),
        (lambda secret: jwt.encode({k: v for k, v in claims().items() if k != "sub"}, secret, algorithm="HS256"), "token_invalid"),
        (lambda secret: jwt.encode(claims(sub=""), secret, algorithm="HS256"), "token_invalid"),
        (lambda secret: jwt.encode(claims(sub=42), secret, algorithm="HS256"), "token_invalid"),
        (lambda secret: jwt.encode(claims(sub="x" * 201), secret, algorithm="HS256"), "token_invalid"),
        (lambda secret: jwt.encode(claims(tenant=["a"]), secret, algorithm="HS256"), "token_invalid"),
        (lambda secret: jwt.encode(claims(tenant=""), secret, algorithm="HS256"), "token_invalid"),
        (lambda secret: jwt.encode(claims(exp="tomorrow"), secret, algorithm="HS256"), "token_invalid"),
        (lambda secret: jwt.encode(claims(), secret, algorithm="HS256")[:-4], "token_invalid"),
        (lambda secret: "not.a.jwt", "token_invalid"),
        (lambda secret: "x" * 10_000, "token_invalid"),
    ],
    ids=[
        "alg-none",
        "alg-None",
        "hs256-no-signature",
        "wrong-secret",
        "hs512-not-configured",
        "expired",
        "not-yet-valid-nbf",
        "missing-sub",
        "empty-sub",
        "non-string-sub",
        "overlong-sub",
        "non-string-tenant",
        "empty-tenant",
        "non-numeric-exp",
        "truncated-signature",
        "garbage",
        "huge-garbage",
    ],
)
def test_hs256_attacks_are_401(settings, fresh_backend, make, code):
    assert_rejected(call(make(settings.JWT_SECRET)), code)


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer a b", "Basic YWxpY2U6cHc=", "Token abc", "Bearer \u00e9t\u00e9"],
    ids=["no-token", "two-tokens", "basic", "other-scheme", "non-ascii"],
)
def test_malformed_authorization_headers_are_401(fresh_backend, header):
    assert_rejected(call(None, raw_header=header), "token_invalid")


def test_no_credentials_is_401_not_authenticated(fresh_backend):
    assert_rejected(call(None), "not_authenticated")


def test_rs256_accepts_a_token_from_the_identity_provider(rs256):
    private, _ = rs256
    assert call(jwt.encode(claims(), private, algorithm="RS256")).status_code == 200


def test_rs256_refuses_hs256_signed_with_the_public_key(rs256):
    """Algorithm confusion: the public key is public, so an HS256 token keyed with it
    would be a forgery anyone can make."""
    _, public = rs256
    assert_rejected(call(hs256_with_key(claims(), public.encode())), "token_invalid")


def test_rs256_refuses_hs256_signed_with_the_shared_secret(rs256, settings):
    assert_rejected(call(jwt.encode(claims(), settings.JWT_SECRET, algorithm="HS256")), "token_invalid")


def test_rs256_refuses_alg_none(rs256):
    assert_rejected(call(unsigned({"alg": "none", "typ": "JWT"}, claims())), "token_invalid")


def test_rs256_refuses_a_token_from_another_key(rs256):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert_rejected(call(jwt.encode(claims(), other, algorithm="RS256")), "token_invalid")


def test_rs256_expired_and_not_yet_valid(rs256):
    private, _ = rs256
    assert_rejected(call(jwt.encode(claims(exp=int(time.time()) - 5), private, algorithm="RS256")), "token_expired")
    assert_rejected(call(jwt.encode(claims(nbf=int(time.time()) + 600), private, algorithm="RS256")), "token_invalid")


def test_hs256_config_refuses_an_rs256_token(settings, fresh_backend, rsa_keys):
    private, _ = rsa_keys
    assert_rejected(call(jwt.encode(claims(), private, algorithm="RS256")), "token_invalid")
