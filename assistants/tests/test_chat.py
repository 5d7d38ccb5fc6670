"""The chat services behind the AI SDK endpoints: one stored message and one run per UI
message id, regenerate, the answering assistant, stop (docs/protocol.md 7.4)."""

from __future__ import annotations

import pytest

from aiim_project.core.errors import Invalid, NotFound
from assistants import selectors, services
from assistants.models import Run, RunState
from messaging.models import Message


def chat(conversation, *, ui_id="ui-1", text="hi", user="alice", tenant="default", **kw) -> Run:
    return services.chat_send(tenant=tenant, user_id=user, conversation_id=conversation.id, client_msg_id=ui_id, text=text, **kw)


@pytest.mark.django_db
@pytest.mark.parametrize("conversation_type", ["direct", "group"])
def test_a_retry_of_one_ui_message_stores_nothing_twice_and_starts_one_run(make_assistant, make_conversation, conversation_type):
    # direct: the trigger hook starts the run too (reused); group, reply_in=direct: only the chat starts it.
    make_assistant("bot")
    conversation = make_conversation("alice", ("bot",), type=conversation_type)
    first = chat(conversation, text="hello")
    again = chat(conversation, text="hello")
    assert first.id == again.id
    assert Message.objects.filter(sender_id="alice").count() == 1
    stored = Message.objects.get(sender_id="alice")
    assert stored.client_msg_id == "ui-1" and stored.content == "hello"
    assert Run.objects.count() == 1 and first.trigger_message_id == stored.id and first.assistant_id == "bot"
    assert selectors.active_run_for_conversation(tenant="default", user_id="alice", conversation_id=conversation.id).id == first.id


@pytest.mark.django_db
def test_regenerate_starts_a_new_run_for_the_last_human_message(make_assistant, make_conversation, send):
    make_assistant("bot")
    conversation = make_conversation("alice", ("bot",), type="group")
    first = chat(conversation, text="question")
    send(conversation, sender="bot", content="an answer")  # the assistant's reply is not a human message
    again = services.chat_regenerate(tenant="default", user_id="alice", conversation_id=conversation.id)
    assert again.id != first.id and again.trigger_message_id == first.trigger_message_id
    assert Run.objects.count() == 2 and Message.objects.filter(sender_id="alice").count() == 1


@pytest.mark.django_db
def test_regenerate_without_a_human_message_is_invalid(make_assistant, make_conversation):
    make_assistant("bot")
    conversation = make_conversation("alice", ("bot",), type="group")
    with pytest.raises(Invalid):
        services.chat_regenerate(tenant="default", user_id="alice", conversation_id=conversation.id)


@pytest.mark.django_db
def test_no_assistant_member_is_409_no_assistant(make_assistant, make_conversation):
    make_assistant("bot")
    conversation = make_conversation("alice", ("bob",))
    with pytest.raises(services.NoAssistant) as caught:
        chat(conversation)
    assert (caught.value.status, caught.value.code) == (409, "no_assistant")
    assert not Message.objects.exists()  # refused before anything is stored
    with pytest.raises(services.NoAssistant):
        chat(make_conversation("alice", ("bot",)), assistant_id="bob")  # bob is no assistant


@pytest.mark.django_db
def test_several_assistants_need_assistant_id(make_assistant, make_conversation):
    make_assistant("bot")
    make_assistant("helper")
    conversation = make_conversation("alice", ("bot", "helper"))
    with pytest.raises(Invalid):
        chat(conversation)
    run = chat(conversation, assistant_id="helper")
    assert run.assistant_id == "helper" and Run.objects.count() == 1


@pytest.mark.django_db
def test_another_tenants_conversation_is_not_found(make_assistant, make_conversation):
    make_assistant("bot", tenant="other")
    theirs = make_conversation("alice", ("bot",), tenant="other")
    with pytest.raises(NotFound):
        chat(theirs)
    with pytest.raises(NotFound):
        services.chat_stop(tenant="default", user_id="alice", conversation_id=theirs.id)


@pytest.mark.django_db
def test_stop_ends_the_active_run_and_with_none_active_is_409(make_assistant, make_conversation):
    make_assistant("bot")
    conversation = make_conversation("alice", ("bot",))
    run = chat(conversation)
    stopped = services.chat_stop(tenant="default", user_id="alice", conversation_id=conversation.id)
    assert [r.id for r in stopped] == [run.id] and Run.objects.get().state == RunState.STOPPED
    with pytest.raises(services.NoActiveRun) as caught:
        services.chat_stop(tenant="default", user_id="alice", conversation_id=conversation.id)
    assert (caught.value.status, caught.value.code) == (409, "no_active_run")
    assert selectors.active_run_for_conversation(tenant="default", user_id="alice", conversation_id=conversation.id) is None
