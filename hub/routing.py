"""WebSocket routes. Device ingest authenticates by token; dashboard streams by session and Origin."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import URLPattern, URLResolver, path, re_path

from hub.roles import Role
from live.origins import SameOriginValidator
from live.sessions import StreamSessionMiddleware
from live.streams import DeviceStreamConsumer, FleetStreamConsumer
from transports.websocket import DeviceSocket


class NoRouteConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: refuse the handshake (HTTP 403) instead of raising in the router."""

    async def connect(self) -> None:
        await self.close()


def websocket_routes(role: Role) -> list[URLPattern | URLResolver]:
    """The WebSocket paths a process of this role serves; any other path is refused at the handshake."""
    routes: list[URLPattern | URLResolver] = []
    if role.streams:
        device_stream = SameOriginValidator(StreamSessionMiddleware(DeviceStreamConsumer.as_asgi()))
        fleet_stream = SameOriginValidator(StreamSessionMiddleware(FleetStreamConsumer.as_asgi()))
        # Channels routes ASGI applications with Django's path(); django-stubs knows only views there.
        routes += [
            path("ws/v1/devices/<slug:key>/stream", device_stream),  # type: ignore[arg-type]
            path("ws/v1/fleet/stream", fleet_stream),  # type: ignore[arg-type]
        ]
    if role.serves_devices:
        routes.append(path("ws/v1/<str:token>/telemetry", DeviceSocket.app))  # type: ignore[arg-type]
    return [*routes, re_path(r"", NoRouteConsumer.as_asgi())]
