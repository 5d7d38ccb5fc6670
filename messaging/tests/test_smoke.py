import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_send_and_read_history(api):
    alice = api("alice")
    r = alice.post("/api/aiim/conversations", {"type": "group", "name": "g", "member_ids": ["bob"]}, format="json")
    assert r.status_code == 201, r.content
    conv_id = r.json()["conversation_id"]
    for i in range(3):
        r = alice.post("/api/aiim/messages", {"conversation_id": conv_id, "content": f"m{i}"}, format="json")
        assert r.status_code == 201, r.content
    r = api("bob").get(f"/api/aiim/messages/{conv_id}?after_seq=1")
    assert r.status_code == 200
    assert [m["seq"] for m in r.json()["messages"]] == [2, 3]
    r = api("bob").get("/api/aiim/conversations")
    body = r.json()
    assert body["conversations"][0]["unread_count"] == 3
    assert body["conversations"][0]["last_message"]["content"] == "m2"
