"""WebSocket routes. Device ingest authenticates by token; dashboard streams by session and Origin."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.urls import path, re_path

from dashboards.auth import StreamSessionMiddleware
from dashboards.consumers import DeviceStreamConsumer, FleetStreamConsumer
from hub.origins import SameOriginValidator
from ingest.consumers import TelemetryConsumer


class NoRouteConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: refuse the handshake (HTTP 403) instead of raising in the router."""

    async def connect(self) -> None:
        await self.close()


def websocket_routes(role: str) -> list:
    """The WebSocket paths a process of this HUB_ROLE serves; any other path is refused at the handshake."""
    streams = [
        path(
            "ws/v1/devices/<slug:key>/stream",
            SameOriginValidator(StreamSessionMiddleware(DeviceStreamConsumer.as_asgi())),
        ),
        path("ws/v1/fleet/stream", SameOriginValidator(StreamSessionMiddleware(FleetStreamConsumer.as_asgi()))),
    ]
    ingest = [path("ws/v1/<str:token>/telemetry", TelemetryConsumer.as_asgi())]
    served = (streams if role in ("all", "stream") else []) + (ingest if role in ("all", "ingest") else [])
    return [*served, re_path(r"", NoRouteConsumer.as_asgi())]


websocket_urlpatterns = websocket_routes(settings.HUB_ROLE)
