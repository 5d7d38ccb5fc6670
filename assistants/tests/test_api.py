"""The assistants REST API: admin-only writes, tenancy, secrets never rendered."""

from __future__ import annotations

import logging

import pytest

from assistants.models import Assistant, Run, RunState

pytestmark = pytest.mark.django_db

SECRET = "sk-test-0123456789-very-secret"
BODY = {"assistant_id": "bot", "name": "Bot", "base_url": "http://127.0.0.1:8090/v1", "model": "fake-1"}


def test_admin_creates_and_everyone_lists_without_secrets(admin_api, api, caplog):
    caplog.set_level(logging.DEBUG)
    response = admin_api().post("/api/aiim/assistants", {**BODY, "api_key": SECRET, "params": {"temperature": 0.2}}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["assistant_id"] == "bot" and body["has_api_key"] is True and body["params"] == {"temperature": 0.2}
    assert body["reply_in"] == "direct" and body["history_limit"] == 50 and body["max_concurrent_runs"] == 4
    stored = Assistant.objects.get(assistant_id="bot")
    assert stored.api_key_encrypted and SECRET not in stored.api_key_encrypted  # encrypted at rest
    listed = api("alice").get("/api/aiim/assistants").json()
    assert listed == {"assistants": [{"assistant_id": "bot", "name": "Bot", "model": "fake-1"}]}
    one = admin_api().get("/api/aiim/assistants/bot")
    patched = admin_api().patch("/api/aiim/assistants/bot", {"api_key": SECRET + "2", "reply_in": "always"}, format="json")
    assert patched.status_code == 200 and patched.json()["reply_in"] == "always"
    for r in (response, one, patched, api("alice").get("/api/aiim/assistants/bot")):
        assert SECRET not in r.content.decode()
    assert SECRET not in caplog.text


def test_decrypts_the_stored_key(make_assistant):
    from assistants import crypto

    assistant = make_assistant(api_key=SECRET)
    assert crypto.decrypt(assistant.api_key_encrypted) == SECRET


def test_non_admin_is_forbidden(api):
    for call in (
        lambda c: c.post("/api/aiim/assistants", BODY, format="json"),
        lambda c: c.patch("/api/aiim/assistants/bot", {"name": "x"}, format="json"),
        lambda c: c.delete("/api/aiim/assistants/bot"),
    ):
        response = call(api("alice"))
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert not Assistant.objects.exists()


def test_duplicate_is_409_and_bad_input_400(admin_api):
    assert admin_api().post("/api/aiim/assistants", BODY, format="json").status_code == 201
    duplicate = admin_api().post("/api/aiim/assistants", BODY, format="json")
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "conflict"
    bad = admin_api().post("/api/aiim/assistants", {**BODY, "assistant_id": "b2", "base_url": "ftp://x"}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    missing = admin_api().post("/api/aiim/assistants", {"assistant_id": "b3"}, format="json")
    assert missing.status_code == 400
    reserved = admin_api().post("/api/aiim/assistants", {**BODY, "assistant_id": "b4", "params": {"stream": False}}, format="json")
    assert reserved.status_code == 400


def test_another_tenants_assistant_is_missing(admin_api, make_assistant):
    make_assistant(tenant="other")
    missing = admin_api().get("/api/aiim/assistants/nope")
    theirs = admin_api().get("/api/aiim/assistants/bot")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert admin_api().patch("/api/aiim/assistants/bot", {"name": "x"}, format="json").json() == missing.json()
    assert admin_api().delete("/api/aiim/assistants/bot").status_code == 404
    assert admin_api().get("/api/aiim/assistants").json() == {"assistants": []}
    # the same id in this tenant is free
    assert admin_api().post("/api/aiim/assistants", BODY, format="json").status_code == 201


def test_delete(admin_api, make_assistant):
    make_assistant()
    assert admin_api().delete("/api/aiim/assistants/bot").status_code == 204
    assert admin_api().get("/api/aiim/assistants/bot").status_code == 404


def _run(conversation, **kw):
    return Run.objects.create(tenant=conversation.tenant, assistant_id="bot", conversation_id=conversation.id, **kw)


def test_runs_members_only_and_tenancy(api, make_conversation, make_assistant):
    conv = make_conversation("alice", ["bob", "bot"])
    theirs = make_conversation("alice", ["bob"], tenant="other")
    run = _run(conv, state=RunState.COMPLETED, prompt_tokens=3, completion_tokens=4, total_tokens=7)
    other_run = _run(theirs)
    body = api("alice").get(f"/api/aiim/runs/{run.id}").json()
    assert body["run_id"] == run.id and body["state"] == "completed" and body["error"] is None
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "estimated": False}
    missing = api("alice").get("/api/aiim/runs/nope")
    assert missing.status_code == 404
    assert api("alice").get(f"/api/aiim/runs/{other_run.id}").json() == missing.json()
    assert api("alice").post(f"/api/aiim/runs/{other_run.id}/stop").json() == api("alice").post("/api/aiim/runs/nope/stop").json()
    assert api("carol").get(f"/api/aiim/runs/{run.id}").status_code == 403
    assert api("alice").get(f"/api/aiim/conversations/{theirs.id}/runs").json() == api("alice").get("/api/aiim/conversations/nope/runs").json()


def test_conversation_runs_newest_first(api, make_conversation, django_assert_num_queries):
    conv = make_conversation("alice", ["bob", "bot"])
    runs = [_run(conv) for _ in range(5)]
    client = api("alice")
    with django_assert_num_queries(2):  # the membership check, the page
        body = client.get(f"/api/aiim/conversations/{conv.id}/runs?limit=3").json()
    assert [r["run_id"] for r in body["runs"]] == [r.id for r in reversed(runs)][:3]


def test_stop_queued_then_409(api, make_conversation):
    conv = make_conversation("alice", ["bob", "bot"])
    run = _run(conv)
    response = api("bob").post(f"/api/aiim/runs/{run.id}/stop")
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    again = api("bob").post(f"/api/aiim/runs/{run.id}/stop")
    assert again.status_code == 409 and again.json()["code"] == "conflict"


def test_admin_page_never_shows_the_key(client, make_assistant, django_user_model):
    assistant = make_assistant(api_key=SECRET)
    user = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-ops-123456")
    client.force_login(user)
    for url in ("/admin/assistants/assistant/", f"/admin/assistants/assistant/{assistant.pk}/change/"):
        page = client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert SECRET not in html and assistant.api_key_encrypted not in html
    change = client.post(
        f"/admin/assistants/assistant/{assistant.pk}/change/",
        {
            "tenant": "default", "assistant_id": "bot", "name": "Bot", "base_url": assistant.base_url, "model": "m",
            "system_prompt": "", "params": "{}", "reply_in": "direct", "history_limit": 50, "max_concurrent_runs": 4,
            "new_api_key": "",
        },
    )
    assert change.status_code == 302
    assistant.refresh_from_db()
    assert assistant.model == "m" and assistant.api_key_encrypted  # an empty field keeps the key


def test_mint_token_role_admin(capsys):
    from django.core.management import call_command

    from aiim_project.core.auth import decode_token

    call_command("mint_token", "--user", "root", "--role", "admin")
    principal = decode_token(capsys.readouterr().out.strip())
    assert principal.is_admin and principal.user_id == "root"


def test_assistant_command(capsys):
    from django.core.management import call_command

    call_command("assistant", "create", "bot", "--name", "Bot", "--base-url", "http://127.0.0.1:8090/v1", "--model", "fake-1", "--api-key", SECRET)
    call_command("assistant", "list")
    out = capsys.readouterr().out
    assert "bot" in out and "key set" in out and SECRET not in out
    call_command("assistant", "delete", "bot")
    assert not Assistant.objects.exists()


def test_production_needs_the_encryption_key(settings, make_assistant):
    from django.core import checks

    from assistants import crypto

    make_assistant(api_key=SECRET)
    settings.DEBUG = False
    settings.ASSISTANT_ENCRYPTION_KEY = ""
    errors = checks.run_checks(tags=["assistants"], databases=["default"], include_deployment_checks=False)
    assert [e.id for e in errors] == ["assistants.E001"]
    with pytest.raises(crypto.KeyMissing):
        crypto.encrypt("x")


def test_a_tenant_without_assistants_pays_no_query_per_send(make_conversation, send, django_assert_num_queries):
    conv = make_conversation("alice", ["bob"])
    send(conv)  # fills the per-process cache for the tenant
    with django_assert_num_queries(0):
        from assistants import triggers

        triggers.messages_stored("default", [conv.messages.model(conversation_id=conv.id, sender_id="alice", content="x")])


def test_trigger_rules(make_conversation, make_assistant, send):
    from assistants import triggers

    make_assistant()
    make_assistant("bot2")
    group = make_conversation("alice", ["bob", "bot", "bot2"])
    send(group, content="hello all")
    assert not Run.objects.exists()
    send(group, content="hey @bot2!")
    send(group, content="@bot: and @bot2")
    send(group, content="x", metadata={"mentions": ["bot"]})
    assert sorted(Run.objects.values_list("assistant_id", flat=True)) == ["bot", "bot", "bot2", "bot2"]
    send(group, sender="bot", content="@bot2 from a bot")  # assistants never trigger runs
    assert Run.objects.count() == 4
    direct = make_conversation("alice", ["bot"], type="direct")
    message = send(direct, content="no mention needed")
    run = Run.objects.get(conversation_id=direct.id)
    assert (run.trigger_message_id, run.state, run.tenant) == (message.id, "queued", "default")
    assert triggers.mentions(message, "bot") is False
