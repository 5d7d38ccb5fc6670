from django.urls import re_path

from . import views


def patterns(*, load_chunks) -> list:
    """The stream endpoints, built by the wiring with the streaming app's chunk loader."""
    return [
        re_path(
            r"^messages/(?P<conversation_id>[^/]+)/(?P<message_id>[^/]+)/stream/?$",
            views.MessageStreamView.as_view(load_chunks=load_chunks),
            name="message-ui-stream",
        ),
        re_path(
            r"^conversations/(?P<conversation_id>[^/]+)/events/?$",
            views.ConversationEventsView.as_view(load_chunks=load_chunks),
            name="conversation-events",
        ),
        re_path(r"^chat/?$", views.ChatView.as_view(load_chunks=load_chunks), name="chat"),
        re_path(r"^chat/(?P<conversation_id>[^/]+)/stream/?$", views.ChatResumeView.as_view(load_chunks=load_chunks), name="chat-stream"),
        re_path(r"^chat/(?P<conversation_id>[^/]+)/stop/?$", views.ChatStopView.as_view(), name="chat-stop"),
    ]
