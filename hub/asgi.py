"""ASGI entry point: HTTP (Django), WebSocket (Channels) and a lifespan that owns the writer."""

import asyncio
import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - after Django set-up
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from alerts.silence import silence_loop  # noqa: E402
from alerts.webhooks import webhook_loop  # noqa: E402
from dashboards.watchdog import layer_watchdog  # noqa: E402
from hub.routing import websocket_urlpatterns  # noqa: E402
from ingest.retention import retention_configured, retention_loop  # noqa: E402
from ingest.revocation import revocation_loop  # noqa: E402
from ingest.service import get_writer, writer_shutdown  # noqa: E402

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
        await send({"type": "websocket.close", "code": 1013})  # try again later


# Static files (plotly.js, dashboard scripts) are served in-process so the hub needs nothing in front of
# it; a proxy or CDN in front may serve STATIC_ROOT instead (docs/deployment.md).
router = ProtocolTypeRouter(
    {"http": ASGIStaticFilesHandler(django_app), "websocket": WebSocketCap(URLRouter(websocket_urlpatterns))}
)


async def lifespan(receive, send) -> None:
    """Start the writer (and retention) with the server; on shutdown drain the writer before exit."""
    tasks: list[asyncio.Task[None]] = []
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            get_writer()
            tasks.append(asyncio.create_task(revocation_loop(), name="hub-token-recheck"))
            tasks.append(asyncio.create_task(silence_loop(), name="hub-alert-silence"))
            tasks.append(asyncio.create_task(webhook_loop(), name="hub-alert-webhooks"))
            tasks.append(asyncio.create_task(layer_watchdog(), name="hub-layer-watchdog"))
            if retention_configured():
                tasks.append(asyncio.create_task(retention_loop(), name="hub-retention"))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await writer_shutdown()
            logger.info("writer drained")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    else:
        await router(scope, receive, send)
