"""The browser test page at /ws-test (a headless-browser run of it lives in test_ws_test_browser.py)."""


def test_page_serves_the_client_without_authentication(client):
    r = client.get("/ws-test")
    assert r.status_code == 200
    page = r.content.decode()
    for element in ('id="token"', 'id="connect"', 'id="subscribe"', 'id="send"', 'id="stream"', 'id="log"'):
        assert element in page
    assert "/api/aiim/ws" in page
