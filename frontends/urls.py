from django.urls import re_path

from . import views

urlpatterns = [
    re_path(
        r"^messages/(?P<conversation_id>[^/]+)/(?P<message_id>[^/]+)/stream/?$",
        views.MessageStreamView.as_view(),
        name="message-ui-stream",
    ),
    re_path(r"^conversations/(?P<conversation_id>[^/]+)/events/?$", views.ConversationEventsView.as_view(), name="conversation-events"),
]
