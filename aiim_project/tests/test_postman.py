"""Postman collections under newman against a real Daphne:

* this service's own collection (docs/postman/aiim.postman_collection.json), unattended:
  every REST endpoint, status and shape asserted, ids captured from 200 and 201 answers;
* the original AIIM's collection (../shared/original/, unmodified): its scripts capture ids
  only on 200, so the ids are supplied as variables (docs/migrating.md); all 10 requests
  must succeed.

newman is pinned in tests/node/package.json; .ci/run installs it (`npm ci`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from django.test import Client

from aiim_project.core.auth import mint_token
from aiim_project.tests.original import original_dir
from messaging import services
from tests.support import ROOT

pytestmark = pytest.mark.e2e

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NEWMAN = ROOT / "tests" / "node" / "node_modules" / ".bin" / "newman"
OWN_COLLECTION = ROOT / "docs" / "postman" / "aiim.postman_collection.json"


def newman(collection, tmp_path, **variables: str) -> dict:
    """Run the collection; the parsed JSON report."""
    if not NEWMAN.exists() or shutil.which("node") is None:
        message = "newman is not installed (cd tests/node && npm ci)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    report = tmp_path / "newman.json"
    args = [str(NEWMAN), "run", str(collection), "--reporters", "cli,json", "--reporter-json-export", str(report),
            "--timeout-request", "10000", "--disable-unicode", "--color", "off"]
    for name, value in variables.items():
        args += ["--env-var", f"{name}={value}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    parsed = json.loads(report.read_text())
    parsed["_output"] = result.stdout[-6000:] + result.stderr[-2000:]
    parsed["_returncode"] = result.returncode
    return parsed


def executions(report: dict) -> list[tuple[str, int]]:
    return [(e["item"]["name"], e.get("response", {}).get("code", 0)) for e in report["run"]["executions"]]


def test_own_collection_runs_unattended(daphne, tmp_path):
    server = daphne(1)[0]
    report = newman(OWN_COLLECTION, tmp_path, base_url=server.url,
                    token=mint_token(user_id="alice"), token_bob=mint_token(user_id="bob"),
                    token_admin=mint_token(user_id="admin", role="admin"))
    stats = report["run"]["stats"]
    assert report["_returncode"] == 0 and report["run"]["failures"] == [], report["_output"]
    assert stats["assertions"]["failed"] == 0 and stats["testScripts"]["failed"] == 0
    collection = json.loads(OWN_COLLECTION.read_text())
    names = [item["name"] for folder in collection["item"] for item in folder["item"]]
    assert [name for name, _ in executions(report)] == names
    # Every request asserts its status and its shape.
    assert all(len(e.get("assertions", [])) >= 2 for e in report["run"]["executions"]), [
        e["item"]["name"] for e in report["run"]["executions"] if len(e.get("assertions", [])) < 2
    ]


@pytest.mark.django_db
def test_own_collection_covers_every_rest_endpoint():
    """Every operation of the OpenAPI schema has a request in the collection."""
    schema = Client().get("/openapi.json").json()
    collection = json.loads(OWN_COLLECTION.read_text())
    requests = [(item["request"]["method"], "/" + "/".join(item["request"]["url"]["path"]))
                for folder in collection["item"] for item in folder["item"]]
    missing = []
    for path, operations in schema["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)) + "$")
        for method in operations:
            if not any(m == method.upper() and pattern.match(p) for m, p in requests):
                missing.append((method.upper(), path))
    assert missing == []


def test_the_original_collection_passes_with_ids_as_variables(daphne, tmp_path):
    server = daphne(1)[0]
    # What its scripts would have captured on 200: the direct conversation of its two
    # users and a message in it from the other one.
    conversation, _ = services.conversation_create(tenant="default", creator="user1", type="direct", member_ids=["user2"])
    message, _ = services.message_send(tenant="default", sender="user2", conversation_id=conversation.id, content="hi")
    report = newman(original_dir() / "AIIM.postman_collection.json", tmp_path, base_url=server.url,
                    jwt_token=mint_token(user_id="user1"), conversation_id=conversation.id, message_id=message.id)
    assert report["_returncode"] == 0 and report["run"]["failures"] == [], report["_output"]
    ran = executions(report)
    assert len(ran) == 10
    assert all(200 <= code < 300 for _, code in ran), ran
