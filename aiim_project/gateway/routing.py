from django.urls import re_path

from .consumer import GatewayConsumer

websocket_urlpatterns = [re_path(r"^api/aiim/ws/?$", GatewayConsumer.as_asgi())]
