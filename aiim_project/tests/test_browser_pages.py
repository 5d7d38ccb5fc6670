"""What a person sees in a browser, against a server started as `bash .ci/start` starts it
(DEBUG on, static files from the apps): the admin, the API docs and the browsable API render
styled, load nothing from outside this machine, and the browsable API can be logged in to and
used. Headless Chromium, one browser and one server for the module (tests/support/browser.py).
"""

from __future__ import annotations

import json

import pytest

from aiim_project.core.auth import mint_token
from tests.support.http import fetch

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ADMIN_HEADER_BG = "rgb(65, 118, 144)"  # admin/css/base.css --header-bg
BOOTSTRAP_PRIMARY = "rgb(51, 122, 183)"  # rest_framework/css/bootstrap.min.css .btn-primary


def text(tab, selector: str) -> str:
    return tab.js(f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText")


def test_admin_login_page_is_styled(tab, dev_server):
    tab.goto(f"{dev_server.url}/admin/login/")
    assert tab.style("#header", "backgroundColor") == ADMIN_HEADER_BG
    assert tab.style("#login-form input[type=submit]", "backgroundColor") == ADMIN_HEADER_BG
    assert "system-ui" in tab.style("body", "fontFamily")
    # Every stylesheet loaded (a 404 leaves a sheet with no rules).
    assert tab.js("Array.from(document.styleSheets).every(s => s.cssRules.length > 0)")
    tab.assert_nothing_left_the_machine()


def test_a_logged_in_admin_sees_a_styled_change_list(tab, dev_server, django_user_model, make_conversation):
    django_user_model.objects.create_superuser("operator", "op@example.com", "a-long-operator-password")
    conversation = make_conversation("alice", ("bob",), name="Browser check")
    tab.goto(f"{dev_server.url}/admin/login/?next=/admin/messaging/conversation/")
    tab.js("document.getElementById('id_username').value = 'operator'")
    tab.js("document.getElementById('id_password').value = 'a-long-operator-password'")
    tab.click_and_wait("#login-form input[type=submit]")
    tab.wait_for("!!document.getElementById('result_list')")
    assert conversation.id in text(tab, "#result_list") and "Browser check" in text(tab, "#result_list")
    assert tab.style("#header", "backgroundColor") == ADMIN_HEADER_BG
    # The filter sidebar is laid out beside the list, not as bare HTML below it.
    beside = tab.js(
        "(() => { const f = document.getElementById('changelist-filter').getBoundingClientRect();"
        " const r = document.getElementById('result_list').getBoundingClientRect();"
        " return f.left > r.left + 300 && f.top < r.bottom; })()"
    )
    assert beside
    assert tab.style("#changelist-filter h2", "backgroundColor") == ADMIN_HEADER_BG
    tab.assert_nothing_left_the_machine()


def test_swagger_ui_lists_every_operation_of_the_schema(tab, dev_server):
    status, _, schema = fetch("GET", f"{dev_server.url}/api/schema?format=json")
    assert status == 200
    expected = sorted(
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    )
    tab.goto(f"{dev_server.url}/docs")
    tab.wait_for(f"document.querySelectorAll('.opblock').length === {len(expected)}")
    shown = tab.js(
        "Array.from(document.querySelectorAll('.opblock')).map(b => "
        "b.querySelector('.opblock-summary-method').innerText + ' ' + "
        "b.querySelector('.opblock-summary-path').getAttribute('data-path'))"
    )
    assert sorted(shown) == expected
    assert tab.style(".opblock-summary-method", "color") == "rgb(255, 255, 255)"  # swagger-ui.css
    tab.assert_nothing_left_the_machine()


def test_swagger_ui_authorize_takes_a_bearer_token_for_try_it_out(tab, dev_server, make_conversation):
    conversation = make_conversation("alice", ("bob",))
    tab.goto(f"{dev_server.url}/docs")
    tab.wait_for("document.querySelectorAll('.opblock').length > 0")
    tab.js("document.querySelector('.btn.authorize').click()")
    tab.wait_for("!!document.querySelector('.auth-container input')")
    assert "bearerAuth" in text(tab, ".auth-container")
    # A React-controlled input: set it through the native setter, then tell React.
    tab.js(
        "(() => { const i = document.querySelector('.auth-container input');"
        " Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(i, "
        f"{json.dumps(mint_token(user_id='alice'))}); i.dispatchEvent(new Event('input', {{bubbles: true}})); }})()"
    )
    tab.js("document.querySelector('.auth-container button.authorize').click()")
    tab.wait_for("Array.from(document.querySelectorAll('.auth-container button')).some(b => b.innerText.includes('Logout'))")
    tab.js("document.querySelector('.btn-done').click()")
    tab.js(
        "window.op = Array.from(document.querySelectorAll('.opblock.opblock-get')).find(b =>"
        " b.querySelector('.opblock-summary-path').getAttribute('data-path') === '/api/aiim/conversations');"
        " op.querySelector('.opblock-summary-control').click()"
    )
    tab.wait_for("!!op.querySelector('.try-out__btn')")
    tab.js("op.querySelector('.try-out__btn').click()")
    tab.wait_for("!!op.querySelector('.btn.execute')")
    tab.js("op.querySelector('.btn.execute').click()")
    tab.wait_for("!!op.querySelector('.live-responses-table tbody .response-col_status')")
    assert text(tab, "#" + tab.js("op.id") + " .live-responses-table tbody .response-col_status") == "200"
    assert conversation.id in tab.js("op.querySelector('.live-responses-table tbody .response-col_description').innerText")
    tab.assert_nothing_left_the_machine()


def test_redoc_renders_the_schema(tab, dev_server):
    tab.goto(f"{dev_server.url}/redoc")
    tab.wait_for("document.querySelectorAll('li[data-item-id]').length > 5")
    assert text(tab, "h1").startswith("AIIM API")
    assert "List my conversations" in text(tab, "body")
    # Nothing from a CDN: the footer logo ReDoc always asks for is stopped by the page's CSP.
    tab.assert_nothing_left_the_machine()


def test_browsable_api_without_login_offers_the_login_link(tab, dev_server):
    tab.goto(f"{dev_server.url}/api/aiim/conversations")
    assert "401" in text(tab, ".response-info")
    link = tab.js("document.querySelector('a[href^=\"/api-auth/login\"]').getAttribute('href')")
    assert link == "/api-auth/login?next=/api/aiim/conversations"
    assert tab.style(".navbar", "backgroundColor") == "rgb(44, 44, 44)"


def test_browsable_api_log_in_create_send_and_log_out(tab, dev_server, make_conversation):
    existing = make_conversation("alice", ("bob",), name="Already here")
    tab.goto(f"{dev_server.url}/api/aiim/conversations")
    tab.click_and_wait("a[href^='/api-auth/login']")
    assert tab.style("#token-submit", "backgroundColor") == BOOTSTRAP_PRIMARY

    # Log in with a token; back on the list, as alice.
    tab.js(f"document.getElementById('id_token').value = {json.dumps(mint_token(user_id='alice'))}")
    tab.click_and_wait("#token-submit")
    assert tab.url.endswith("/api/aiim/conversations")
    assert "HTTP 200 OK" in text(tab, ".response-info")
    assert existing.id in text(tab, ".response-info")
    assert "alice (default)" in text(tab, ".navbar")

    # Create a conversation from the raw-data form (JSON).
    body = {"type": "group", "name": "Made in a browser", "member_ids": ["bob"]}
    tab.js("document.getElementById('id__content_type').value = 'application/json'")
    tab.js(f"document.getElementById('id__content').value = {json.dumps(json.dumps(body))}")
    tab.js("document.querySelector('#id__content').form.querySelector('button').click()")
    tab.wait_for("document.querySelector('.response-info') && document.querySelector('.response-info').innerText.includes('201 Created')")
    created = json.loads(text(tab, ".response-info").split("\n\n", 1)[1])
    assert created["name"] == "Made in a browser"
    assert sorted(m["user_id"] for m in created["members"]) == ["alice", "bob"]

    # The list shows it.
    tab.goto(f"{dev_server.url}/api/aiim/conversations")
    listed = json.loads(text(tab, ".response-info").split("\n\n", 1)[1])
    assert created["conversation_id"] in [c["conversation_id"] for c in listed["conversations"]]

    # Send a message to it from the messages page's form; the same answer as the JSON API.
    tab.goto(f"{dev_server.url}/api/aiim/messages")
    message = {"conversation_id": created["conversation_id"], "content": "hello from the form"}
    tab.js(f"document.getElementById('id__content').value = {json.dumps(json.dumps(message))}")
    tab.js("document.querySelector('#id__content').form.querySelector('button').click()")
    tab.wait_for("document.querySelector('.response-info').innerText.includes('201 Created')")
    sent = json.loads(text(tab, ".response-info").split("\n\n", 1)[1])["message"]
    assert (sent["sender_id"], sent["content"], sent["seq"]) == ("alice", "hello from the form", 1)

    # A POST without the CSRF token is refused, even with the session cookie.
    refused = tab.js(
        "fetch('/api/aiim/conversations', {method: 'POST', headers: {'Content-Type': 'application/json'}, "
        "body: JSON.stringify({type: 'group', member_ids: ['carol']})}).then(r => r.json().then(b => [r.status, b]))"
    )
    assert refused[0] == 403 and refused[1]["code"] == "forbidden" and refused[1]["detail"].startswith("CSRF Failed")

    # Log out from the user menu: back at the login page, and the API asks for a login again.
    tab.click_and_wait("a[onclick*='logoutForm']")
    assert "/api-auth/login" in tab.url
    tab.goto(f"{dev_server.url}/api/aiim/conversations")
    assert "401" in text(tab, ".response-info")
    assert tab.js("!!document.querySelector('a[href^=\"/api-auth/login\"]')")
    tab.assert_nothing_left_the_machine()
