"""ASGI entry point: HTTP (Django), WebSocket (Channels) and a lifespan that owns the writer."""

import asyncio
import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - after Django set-up
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from hub.routing import websocket_urlpatterns  # noqa: E402
from ingest.retention import retention_configured, retention_loop  # noqa: E402
from ingest.revocation import revocation_loop  # noqa: E402
from ingest.service import get_writer, writer_shutdown  # noqa: E402

logger = logging.getLogger(__name__)

# Static files (plotly.js, dashboard scripts) are served in-process so the hub needs nothing in front of
# it; a proxy or CDN in front may serve STATIC_ROOT instead (docs/deployment.md).
router = ProtocolTypeRouter({"http": ASGIStaticFilesHandler(django_app), "websocket": URLRouter(websocket_urlpatterns)})


async def lifespan(receive, send) -> None:
    """Start the writer (and retention) with the server; on shutdown drain the writer before exit."""
    tasks: list[asyncio.Task[None]] = []
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            get_writer()
            tasks.append(asyncio.create_task(revocation_loop(), name="hub-token-recheck"))
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
