from django.urls import re_path

from . import views

# Paths accept an optional trailing slash, as messaging's do: the original clients send both.
urlpatterns = [
    re_path(r"^receipts/delivered/?$", views.DeliveredView.as_view(), name="receipts-delivered"),
    re_path(r"^receipts/read/?$", views.ReadView.as_view(), name="receipts-read"),
    re_path(
        r"^receipts/(?P<conversation_id>[^/]+)/(?P<message_id>[^/]+)/?$",
        views.MessageReceiptsView.as_view(),
        name="message-receipts",
    ),
]
