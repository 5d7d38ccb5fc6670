from django.urls import re_path

from . import views

urlpatterns = [
    re_path(r"^messages/stream/?$", views.StreamChunkView.as_view(), name="message-stream"),
]
