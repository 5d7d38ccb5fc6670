"""/api-auth/login and /api-auth/logout (aiim_project.browser_login) with Django's test client,
CSRF checks on (`enforce_csrf_checks=True`, as a browser gets them)."""

from __future__ import annotations

import re

import pytest
from django.conf import settings as django_settings
from django.test import Client

from aiim_project.session_auth import SESSION_TOKEN_KEY

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser():
    """A client that keeps cookies and enforces CSRF; `csrf()` is the token its last page carried."""
    client = Client(enforce_csrf_checks=True)

    def csrf() -> str:
        return client.cookies[django_settings.CSRF_COOKIE_NAME].value

    client.csrf = csrf
    return client


def login(browser, token: str, next_url: str = "/api/aiim/conversations"):
    page = browser.get(f"/api-auth/login?next={next_url}")
    assert page.status_code == 200
    return browser.post("/api-auth/login", {"token": token, "next": next_url, "csrfmiddlewaretoken": browser.csrf()})


def test_the_login_page_offers_a_token_form_and_with_debug_a_mint_form(browser, settings):
    settings.DEBUG = False
    page = browser.get("/api-auth/login").content.decode()
    assert 'name="token"' in page and 'id="mint-form"' not in page
    settings.DEBUG = True
    assert 'id="mint-form"' in browser.get("/api-auth/login").content.decode()


def test_logging_in_with_a_token_opens_the_browsable_api(browser, token, make_conversation):
    conversation = make_conversation("alice", ("bob",), name="mine")
    before = browser.get("/api-auth/login?next=/api/aiim/conversations")
    anonymous_session = browser.cookies.get(django_settings.SESSION_COOKIE_NAME)
    response = browser.post(
        "/api-auth/login",
        {"token": f"Bearer {token('alice')}", "next": "/api/aiim/conversations", "csrfmiddlewaretoken": browser.csrf()},
    )
    assert before.status_code == 200
    assert response.status_code == 302 and response["Location"] == "/api/aiim/conversations"
    session_key = browser.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert anonymous_session is None or anonymous_session.value != session_key
    page = browser.get("/api/aiim/conversations", HTTP_ACCEPT="text/html")
    html = page.content.decode()
    assert page.status_code == 200
    assert conversation.id in html and "alice (default)" in html
    assert 'action="/api-auth/logout?next=/api/aiim/conversations"' in html


def test_a_bad_token_re_shows_the_form_with_the_error_not_the_token(browser, token):
    expired = token("alice", ttl=-5)
    response = login(browser, expired)
    assert response.status_code == 400
    html = response.content.decode()
    assert "token_expired" in html and expired not in html
    response = login(browser, "not-a-jwt")
    assert response.status_code == 400 and "token_invalid" in response.content.decode()
    assert browser.get("/api/aiim/conversations").status_code == 401


def test_minting_needs_debug(browser, settings):
    settings.DEBUG = True
    browser.get("/api-auth/login")
    response = browser.post(
        "/api-auth/login", {"action": "mint", "user_id": "dora", "tenant": "acme", "csrfmiddlewaretoken": browser.csrf()}
    )
    assert response.status_code == 302
    assert "dora (acme)" in browser.get("/api/aiim/conversations", HTTP_ACCEPT="text/html").content.decode()

    settings.DEBUG = False
    other = Client(enforce_csrf_checks=True)
    other.get("/api-auth/login")
    csrf = other.cookies[django_settings.CSRF_COOKIE_NAME].value
    response = other.post("/api-auth/login", {"action": "mint", "user_id": "dora", "csrfmiddlewaretoken": csrf})
    assert response.status_code == 403
    assert other.get("/api/aiim/conversations").status_code == 401


def test_next_must_stay_on_this_site(browser, token):
    response = login(browser, token("alice"), next_url="https://evil.example/steal")
    assert response["Location"] == "/api/aiim/conversations"


def test_the_login_form_needs_its_csrf_token(browser, token):
    browser.get("/api-auth/login")
    response = browser.post("/api-auth/login", {"token": token("alice")})
    assert response.status_code == 403
    assert browser.get("/api/aiim/conversations").status_code == 401


def test_api_posts_from_a_session_need_the_csrf_token(browser, token):
    login(browser, token("alice"))
    body = {"type": "group", "member_ids": ["bob"]}
    refused = browser.post("/api/aiim/conversations", body, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden" and refused.json()["detail"].startswith("CSRF Failed")
    # The token the browsable API's page carries (the forms send it as X-CSRFToken).
    page = browser.get("/api/aiim/conversations", HTTP_ACCEPT="text/html").content.decode()
    page_token = re.search(r'"csrfToken": "([^"]+)"', page).group(1)
    created = browser.post("/api/aiim/conversations", body, content_type="application/json", HTTP_X_CSRFTOKEN=page_token)
    assert created.status_code == 201, created.content
    assert sorted(m["user_id"] for m in created.json()["members"]) == ["alice", "bob"]


def test_logout_ends_the_session(browser, token):
    login(browser, token("alice"))
    assert browser.get("/api/aiim/conversations").status_code == 200
    assert browser.get("/api-auth/logout").status_code == 200  # a button, nothing changes
    assert browser.get("/api/aiim/conversations").status_code == 200
    response = browser.post("/api-auth/logout", {"next": "/api/aiim/conversations", "csrfmiddlewaretoken": browser.csrf()})
    assert response.status_code == 302
    assert response["Location"] == "/api-auth/login?next=%2Fapi%2Faiim%2Fconversations"
    assert browser.get("/api/aiim/conversations").status_code == 401


def test_an_admin_login_does_not_authenticate_the_api(client, django_user_model):
    operator = django_user_model.objects.create_superuser("operator", "op@example.com", "a-long-operator-password")
    client.force_login(operator)
    assert client.get("/admin/").status_code == 200
    response = client.get("/api/aiim/conversations")
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
    assert SESSION_TOKEN_KEY not in client.session
