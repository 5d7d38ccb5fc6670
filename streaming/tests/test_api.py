import pytest

from messaging.models import Message

pytestmark = pytest.mark.django_db

URL = "/api/aiim/messages/stream"


def post(client, conv_id, **body):
    return client.post(URL, {"conversation_id": conv_id, "client_msg_id": "s1", **body}, format="json")


def test_first_chunk_is_201_later_chunks_200_and_history_shows_one_message(api, make_conversation):
    conv = make_conversation()
    alice = api("alice")
    r = post(alice, conv.id, chunk="Hel")
    assert r.status_code == 201, r.content
    message = r.json()["message"]
    assert (message["type"], message["content"], message["seq"]) == ("ai", "Hel", 1)
    assert message["stream"] == {"stream_id": "s1", "state": "streaming", "chunk_count": 1}
    r = post(alice, conv.id, chunk="lo", chunk_index=1)
    assert r.status_code == 200, r.content
    assert r.json()["message"]["content"] == "Hello"
    history = api("bob").get(f"/api/aiim/messages/{conv.id}").json()["messages"]
    assert [(m["content"], m["stream"]["chunk_count"]) for m in history] == [("Hello", 2)]
    r = post(alice, conv.id, chunk=" world", stream_end=True)
    assert r.status_code == 200
    assert r.json()["message"]["stream"] == {"stream_id": "s1", "state": "completed", "chunk_count": 3}
    assert api("bob").get(f"/api/aiim/messages/{conv.id}").json()["messages"][0]["content"] == "Hello world"


def test_trailing_slash_is_accepted(api, make_conversation):
    conv = make_conversation()
    r = api("alice").post(URL + "/", {"conversation_id": conv.id, "client_msg_id": "s1", "chunk": "a"}, format="json")
    assert r.status_code == 201


def test_repeated_chunk_is_200_and_not_applied(api, make_conversation):
    conv = make_conversation()
    alice = api("alice")
    post(alice, conv.id, chunk="a", chunk_index=0)
    r = post(alice, conv.id, chunk="a", chunk_index=0)
    assert r.status_code == 200
    assert r.json()["message"]["content"] == "a"


def test_index_ahead_is_409_naming_the_expected_index(api, make_conversation):
    conv = make_conversation()
    alice = api("alice")
    post(alice, conv.id, chunk="a")
    r = post(alice, conv.id, chunk="c", chunk_index=2)
    assert r.status_code == 409
    assert (r.json()["code"], r.json()["expected_chunk_index"]) == ("conflict", 1)


def test_chunk_after_the_end_is_409(api, make_conversation):
    conv = make_conversation()
    alice = api("alice")
    post(alice, conv.id, chunk="a", stream_end=True)
    r = post(alice, conv.id, chunk="b")
    assert (r.status_code, r.json()["code"]) == (409, "conflict")


def test_stream_abort_ends_the_stream_keeping_its_text(api, make_conversation):
    conv = make_conversation()
    alice = api("alice")
    post(alice, conv.id, chunk="partial")
    r = post(alice, conv.id, stream_abort=True)
    assert r.status_code == 200, r.content
    assert r.json()["message"]["stream"]["state"] == "aborted"
    assert r.json()["message"]["content"] == "partial"
    assert post(alice, conv.id, stream_abort=True).status_code == 409
    assert post(alice, conv.id, chunk="more").status_code == 409


@pytest.mark.parametrize(
    "body, field",
    [
        ({"client_msg_id": None, "chunk": "x"}, "client_msg_id"),
        ({"chunk": 5}, "chunk"),
        ({"chunk": None}, "chunk"),
        ({}, "chunk"),
        ({"chunk": "x", "chunk_index": -1}, "chunk_index"),
        ({"chunk": "x", "chunk_index": "one"}, "chunk_index"),
        ({"chunk": "x", "stream_end": "maybe"}, "stream_end"),
        ({"chunk": "nul\x00"}, "chunk"),
        ({"client_msg_id": "s\x00", "chunk": "x"}, "client_msg_id"),
    ],
)
def test_bad_input_is_400_and_the_stream_is_unharmed(api, make_conversation, body, field):
    conv = make_conversation()
    alice = api("alice")
    post(alice, conv.id, chunk="ok")
    r = post(alice, conv.id, **body)
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid"
    assert field in r.json()["errors"]
    stored = Message.objects.get()
    assert (stored.content, stored.stream_chunk_count, stored.stream_state) == ("ok", 1, "streaming")


def test_missing_client_msg_id_is_400(api, make_conversation):
    conv = make_conversation()
    r = api("alice").post(URL, {"conversation_id": conv.id, "chunk": "x"}, format="json")
    assert (r.status_code, r.json()["code"]) == (400, "invalid")
    assert not Message.objects.exists()


def test_text_over_the_size_limit_is_413_and_the_stream_is_unharmed(api, make_conversation, settings):
    settings.MAX_MESSAGE_BYTES = 100
    conv = make_conversation()
    alice = api("alice")
    post(alice, conv.id, chunk="x" * 80)
    r = post(alice, conv.id, chunk="y" * 30)
    assert (r.status_code, r.json()["code"]) == (413, "too_large")
    assert Message.objects.get().content == "x" * 80


def test_another_member_and_a_non_member_are_403(api, make_conversation):
    conv = make_conversation(others=("bob",))
    post(api("alice"), conv.id, chunk="mine")
    for user in ("bob", "mallory"):
        r = post(api(user), conv.id, chunk="x")
        assert (r.status_code, r.json()["code"]) == (403, "forbidden")
        r = post(api(user), conv.id, stream_abort=True)
        assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert Message.objects.get().content == "mine"


def test_another_tenants_conversation_answers_like_a_missing_one(api, make_conversation):
    theirs = make_conversation(tenant="acme")
    post(api("alice", tenant="acme"), theirs.id, chunk="theirs")
    alice = api("alice")
    answers = []
    for conv_id in (theirs.id, "missing"):
        chunk = post(alice, conv_id, chunk="x")
        abort = post(alice, conv_id, stream_abort=True)
        answers.append((chunk.status_code, chunk.json(), abort.status_code, abort.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == answers[0][2] == 404
    assert answers[0][1]["code"] == "not_found"
    assert Message.objects.get().content == "theirs"


def test_a_tenant_id_other_than_the_tokens_is_403(api, make_conversation):
    conv = make_conversation()
    r = post(api("alice"), conv.id, chunk="x", tenant_id="acme")
    assert (r.status_code, r.json()["code"]) == (403, "tenant_mismatch")


def test_only_the_chunk_that_starts_a_stream_counts_against_the_rate_limit(api, make_conversation, settings, monkeypatch):
    settings.RATE_LIMIT_PER_SEC = 2
    # One fixed one-second window for the whole test, so a window boundary cannot reset it.
    monkeypatch.setattr("aiim_project.core.ratelimit.time", type("Frozen", (), {"time": staticmethod(lambda: 1_700_000_000.5)}))
    conv = make_conversation()
    alice = api("alice")
    assert post(alice, conv.id, chunk="a").status_code == 201  # counts: 1
    for i in range(1, 8):
        assert post(alice, conv.id, chunk="b", chunk_index=i).status_code == 200
    for i in range(8, 12):
        assert post(alice, conv.id, chunk="c").status_code == 200
    assert post(alice, conv.id, chunk="a", chunk_index=0).status_code == 200  # a retry, not a start
    r = alice.post(URL, {"conversation_id": conv.id, "client_msg_id": "s2", "chunk": "x"}, format="json")
    assert r.status_code == 201  # counts: 2
    r = alice.post(URL, {"conversation_id": conv.id, "client_msg_id": "s3", "chunk": "x"}, format="json")
    assert (r.status_code, r.json()["code"]) == (429, "rate_limited")
    assert "Retry-After" in r
