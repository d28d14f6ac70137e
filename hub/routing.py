"""WebSocket routes. Device ingest authenticates by token; dashboard streams by session and Origin."""

from channels.auth import AuthMiddlewareStack
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path, re_path

from dashboards.consumers import DeviceStreamConsumer, FleetStreamConsumer
from ingest.consumers import TelemetryConsumer


class NoRouteConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: refuse the handshake (HTTP 403) instead of raising in the router."""

    async def connect(self) -> None:
        await self.close()


websocket_urlpatterns = [
    path(
        "ws/v1/devices/<slug:key>/stream",
        AllowedHostsOriginValidator(AuthMiddlewareStack(DeviceStreamConsumer.as_asgi())),
    ),
    path(
        "ws/v1/fleet/stream",
        AllowedHostsOriginValidator(AuthMiddlewareStack(FleetStreamConsumer.as_asgi())),
    ),
    path("ws/v1/<str:token>/telemetry", TelemetryConsumer.as_asgi()),
    re_path(r"", NoRouteConsumer.as_asgi()),
]
