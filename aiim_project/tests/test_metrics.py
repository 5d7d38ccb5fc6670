"""/metrics with several server processes: each scrape shows the sum of all of them
(prometheus_client multiprocess mode, PROMETHEUS_MULTIPROC_DIR shared by the processes)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from aiim_project.core.auth import mint_token
from tests.support.http import fetch
from tests.support.metrics import sample, scrape


@pytest.mark.e2e
def test_metrics_sum_traffic_of_two_processes(daphne, make_conversation, tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    first, second = daphne(2, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    conversation = make_conversation("alice", ["bob"])
    auth = {"Authorization": f"Bearer {mint_token(user_id='alice')}"}

    for i, server in enumerate([first, second, second]):
        status, _, _ = fetch(
            "POST", f"{server.url}/api/aiim/messages", {"conversation_id": conversation.id, "content": f"m{i}"}, auth
        )
        assert status == 201
    # A refused request on the first process: errors are counted by code.
    assert fetch("GET", f"{first.url}/api/aiim/conversations/nope", headers=auth)[0] == 404

    for server in (first, second):
        text = scrape(server)
        assert sample(text, "aiim_messages_created_total", via="rest") == 3
        assert sample(text, "aiim_errors_total", code="not_found", via="rest") == 1
        # The seq allocator and django-prometheus's own request metrics are aggregated too.
        assert sample(text, "aiim_seq_alloc_seconds_count") == 3


@pytest.mark.e2e
def test_metrics_count_rate_limit_rejections(daphne, make_conversation, tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    (server,) = daphne(PROMETHEUS_MULTIPROC_DIR=str(prom_dir), RATE_LIMIT_PER_SEC="1")
    conversation = make_conversation("alice", ["bob"])
    auth = {"Authorization": f"Bearer {mint_token(user_id='alice')}"}
    statuses = [
        fetch("POST", f"{server.url}/api/aiim/messages", {"conversation_id": conversation.id, "content": "x"}, auth)[0]
        for _ in range(5)
    ]
    refused = statuses.count(429)
    assert refused >= 1
    text = scrape(server)
    assert sample(text, "aiim_rate_limited_total", via="rest") == refused
    assert sample(text, "aiim_errors_total", code="rate_limited", via="rest") == refused


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
async def test_websocket_traffic_on_one_process_shows_on_the_other(daphne, make_conversation, tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    first, second = daphne(2, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    conversation = await database_sync_to_async(make_conversation)("alice", ["bob"])

    async with connect(f"{second.ws_url}?token={mint_token(user_id='alice')}") as ws:
        await ws.send(orjson.dumps({"type": "send_msg", "conversation_id": conversation.id, "content": "hi"}).decode())
        while orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "ack":
            pass
        text = await asyncio.to_thread(scrape, first)
        assert sample(text, "aiim_ws_connections") == 1
        assert sample(text, "aiim_ws_frames_in_total", type="send_msg") == 1
        assert sample(text, "aiim_messages_created_total", via="ws") == 1
        assert sample(text, "aiim_ws_frames_out_total") >= 1

    # The server notices the close on its own schedule: wait for it, then the live sum drops.
    deadline = time.monotonic() + 10
    while sample(await asyncio.to_thread(scrape, first), "aiim_ws_connections") != 0:
        assert time.monotonic() < deadline, "aiim_ws_connections never went back to 0"
        await asyncio.sleep(0.1)
