"""The REST API fuzzed from its own OpenAPI schema (schemathesis) against a real Daphne:
never a 5xx other than 503, and every error in the `{detail, code}` shape.

Half the examples get a real conversation id (and its messages' ids) of the caller, so the
fuzzing reaches past the "not found" answer into validation and the services.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e


def test_rest_api_fuzzed_from_its_openapi_schema(daphne, make_conversation, send, token):
    conversation = make_conversation("alice", others=("bob",))
    message = send(conversation, "alice", "hello")
    server = daphne(1)[0]
    schema = schemathesis.openapi.from_url(f"{server.url}/api/schema")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    headers = {"Authorization": f"Bearer {token('alice')}"}
    real = {"conversation_id": conversation.id, "message_id": message.id, "user_id": "bob"}
    seen: set[str] = set()
    failures: list = []

    def check(case, use_real):
        # A real conversation's event stream (SSE) never ends: it is fuzzed with made-up ids.
        if use_real and not case.operation.path.endswith("/events"):
            for name, value in real.items():
                if case.path_parameters and name in case.path_parameters:
                    case.path_parameters[name] = value
                if isinstance(case.body, dict) and name in case.body:
                    case.body[name] = value
        seen.add(case.operation.label)
        response = case.call(base_url=server.url, headers=headers, timeout=15)
        status = response.status_code
        if status >= 500 and status != 503:
            failures.append((case.operation.label, case.path_parameters, case.query, case.body, status, response.text[:300]))
            return
        if status >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            if not (isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("detail"), str)):
                failures.append((case.operation.label, case.media_type, dict(response.request.headers), response.request.body, status, response.text[:300]))

    def fuzz(strategy, examples: int) -> None:
        @hsettings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=strategy, use_real=st.booleans())
        def run(case, use_real):
            check(case, use_real)

        run()

    fuzz(st.one_of(*(op.as_strategy() for op in operations)), 400)
    # one_of can leave an operation out of its examples (seen once in a few hundred runs):
    # each one it missed gets a few of its own, so every operation is fuzzed in every run.
    for op in operations:
        if op.label not in seen:
            fuzz(op.as_strategy(), 10)
    assert not failures, failures[:3]
    assert len(seen) == len(operations), set(op.label for op in operations) - seen
