from django.urls import re_path

from . import views

urlpatterns = [
    re_path(r"^assistants/?$", views.AssistantListView.as_view(), name="assistants"),
    re_path(r"^assistants/(?P<assistant_id>[^/]+)/?$", views.AssistantDetailView.as_view(), name="assistant"),
    re_path(r"^runs/(?P<run_id>[^/]+)/?$", views.RunDetailView.as_view(), name="run"),
    re_path(r"^runs/(?P<run_id>[^/]+)/stop/?$", views.RunStopView.as_view(), name="run-stop"),
    re_path(r"^conversations/(?P<conversation_id>[^/]+)/runs/?$", views.ConversationRunsView.as_view(), name="conversation-runs"),
]
