"""WebSocket routes. Device ingest authenticates by token; dashboard streams by session and Origin."""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from dashboards.consumers import DeviceStreamConsumer
from ingest.consumers import TelemetryConsumer

websocket_urlpatterns = [
    path(
        "ws/v1/devices/<slug:key>/stream",
        AllowedHostsOriginValidator(AuthMiddlewareStack(DeviceStreamConsumer.as_asgi())),
    ),
    path("ws/v1/<str:token>/telemetry", TelemetryConsumer.as_asgi()),
]
