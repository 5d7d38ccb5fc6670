"""Reads of runs: a conversation's active runs are found by index, however many runs it had."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from assistants import selectors, services
from assistants.models import Run, RunState
from tests.support.database import query_plan

pytestmark = pytest.mark.django_db


def _plan_of_runs_query(queries: CaptureQueriesContext) -> str:
    (sql,) = [q["sql"] for q in queries.captured_queries if 'FROM "assistants_run"' in q["sql"]]
    return query_plan(sql, analyze="assistants_run")


@pytest.fixture
def long_chat(make_assistant, make_conversation):
    make_assistant("bot")
    conversation = make_conversation("alice", ["bot"], type="direct")
    Run.objects.bulk_create(
        Run(tenant="default", assistant_id="bot", conversation_id=conversation.id, state=RunState.COMPLETED) for _ in range(2000)
    )
    active = Run.objects.create(tenant="default", assistant_id="bot", conversation_id=conversation.id)
    return conversation, active


def test_the_active_run_of_a_long_chat_is_found_by_index(long_chat):
    conversation, active = long_chat
    with CaptureQueriesContext(connection) as queries:
        found = selectors.active_run_for_conversation(tenant="default", user_id="alice", conversation_id=conversation.id)
    assert found.id == active.id
    assert "run_conversation_active" in _plan_of_runs_query(queries)


def test_a_stop_without_run_id_finds_the_active_runs_by_index(long_chat):
    conversation, active = long_chat
    with CaptureQueriesContext(connection) as queries:
        stopped = services.conversation_runs_stop(tenant="default", user_id="alice", conversation_id=conversation.id)
    assert [run.id for run in stopped] == [active.id]
    assert Run.objects.get(pk=active.id).state == RunState.STOPPED
    assert "run_conversation_active" in _plan_of_runs_query(queries)
