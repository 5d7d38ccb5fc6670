from django.urls import re_path

from . import presence_views, views

# Paths accept an optional trailing slash: the original service's clients send both.
urlpatterns = [
    re_path(r"^conversations/?$", views.ConversationListView.as_view(), name="conversations"),
    re_path(r"^conversations/(?P<conversation_id>[^/]+)/?$", views.ConversationDetailView.as_view(), name="conversation"),
    re_path(r"^conversations/(?P<conversation_id>[^/]+)/members/?$", views.MembersView.as_view(), name="members"),
    re_path(
        r"^conversations/(?P<conversation_id>[^/]+)/members/(?P<user_id>[^/]+)/?$",
        views.MemberDetailView.as_view(),
        name="member",
    ),
    re_path(r"^messages/?$", views.MessageSendView.as_view(), name="messages"),
    re_path(r"^messages/(?P<conversation_id>[^/]+)/?$", views.MessageHistoryView.as_view(), name="history"),
    re_path(r"^presence/?$", presence_views.PresenceView.as_view(), name="presence"),
]
