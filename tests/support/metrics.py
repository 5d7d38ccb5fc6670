"""Reading a server's /metrics (Prometheus text format)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .http import fetch


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def scrape(server) -> str:
    status, _, text = fetch("GET", f"{server.url}/metrics")
    assert status == 200
    return text
