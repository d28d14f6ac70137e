"""ASGI entry point: HTTP (Django), WebSocket (Channels) and a lifespan that runs the hub runtime."""

import contextlib
import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - after Django set-up
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from core.collector import collector_for_serving  # noqa: E402
from core.protocol import Close  # noqa: E402
from hub.bodies import BodyLimit  # noqa: E402
from hub.routing import websocket_urlpatterns  # noqa: E402
from hub.runtime import hub_runtime  # noqa: E402

logger = logging.getLogger(__name__)


class WebSocketCap:
    """At most HUB_MAX_CONNECTIONS open WebSockets per process; past it the handshake is denied with 503.

    uvicorn's limit_concurrency does not count WebSocket upgrades, so connection floods are bounded here.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.open = 0

    async def __call__(self, scope, receive, send) -> None:
        if self.open >= settings.HUB_MAX_CONNECTIONS:
            await _deny_websocket(scope, receive, send, 503, b"too many connections; retry later")
            return
        self.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1


async def _deny_websocket(scope, receive, send, status: int, body: bytes) -> None:
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [(b"content-type", b"text/plain"), (b"retry-after", b"5")]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": Close.TRY_AGAIN_LATER})


# Static files (plotly.js, dashboard scripts) are served in-process so the hub needs nothing in front of
# it; a proxy or CDN in front may serve STATIC_ROOT instead (docs/deployment.md).
router = ProtocolTypeRouter(
    {
        "http": BodyLimit(ASGIStaticFilesHandler(django_app)),
        "websocket": WebSocketCap(URLRouter(websocket_urlpatterns)),
    }
)


async def lifespan(receive, send) -> None:
    """Start the hub runtime with the server (or report why it could not); stop it, writer drained, on shutdown."""
    stack = contextlib.AsyncExitStack()
    await receive()  # lifespan.startup
    try:
        await stack.enter_async_context(hub_runtime(role=settings.HUB_ROLE))
        stack.enter_context(collector_for_serving())
    except Exception as exc:
        logger.exception("hub start-up failed")
        await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
        return
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    try:
        await stack.aclose()
    except Exception as exc:
        logger.exception("hub shutdown failed")
        await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
        return
    await send({"type": "lifespan.shutdown.complete"})


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    else:
        await router(scope, receive, send)
