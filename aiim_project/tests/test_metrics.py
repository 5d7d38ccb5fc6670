"""/metrics with several server processes: each scrape shows the sum of all of them
(prometheus_client multiprocess mode, PROMETHEUS_MULTIPROC_DIR shared by the processes)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiim_project.auth import mint_token
from aiim_project.tests.helpers import http


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def scrape(server) -> str:
    status, _, text = http("GET", f"{server.url}/metrics")
    assert status == 200
    return text


@pytest.mark.e2e
def test_metrics_sum_traffic_of_two_processes(daphne, make_conversation, tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    first, second = daphne(2, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    conversation = make_conversation("alice", ["bob"])
    auth = {"Authorization": f"Bearer {mint_token(user_id='alice')}"}

    for i, server in enumerate([first, second, second]):
        status, _, _ = http(
            "POST", f"{server.url}/api/aiim/messages", {"conversation_id": conversation.id, "content": f"m{i}"}, auth
        )
        assert status == 201
    # A refused request on the first process: errors are counted by code.
    assert http("GET", f"{first.url}/api/aiim/conversations/nope", headers=auth)[0] == 404

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
        http("POST", f"{server.url}/api/aiim/messages", {"conversation_id": conversation.id, "content": "x"}, auth)[0]
        for _ in range(5)
    ]
    refused = statuses.count(429)
    assert refused >= 1
    text = scrape(server)
    assert sample(text, "aiim_rate_limited_total", via="rest") == refused
    assert sample(text, "aiim_errors_total", code="rate_limited", via="rest") == refused
