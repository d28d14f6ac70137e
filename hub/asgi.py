"""ASGI entry point: HTTP (Django), WebSocket (Channels) and a lifespan that runs the hub runtime.

The lifespan builds the process's runtime and puts it into the lifespan state, which uvicorn copies into every
connection's scope (`scope["state"]["hub"]`, core/state.py): that is how consumers and views are handed it.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import django
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse, HttpResponseBase


class CycleFreeASGIHandler(ASGIHandler):
    """Django's ASGI handler, with an answer's bytes let go once they are sent rather than at the next full garbage
    collection (issue 22: each history answer of 3.7 MB grew the process by 4-11 MiB, and the serving processes'
    thresholds, core/collector.py, make full collections rare).

    Two reference cycles held every answer. Django's `handle` ends a request by letting its disconnect listener
    raise (RequestAborted, as the server reports the response complete) or by cancelling it, and either exception's
    traceback holds `handle`'s frame, whose locals hold the request, the response and the listener's task. Here the
    listener ends by returning: Django 5.2's `handle` takes a finished listener the same way (it cancels the view's
    task after asyncio.wait, whatever the listener's outcome). And a REST framework view holds its response while
    its request holds the view (`parser_context`): so the response's body is emptied once sent.
    tests/test_asgi_handler.py holds both, and that a disconnect still cancels the view.
    """

    async def send_response(
        self, response: HttpResponseBase, send: Callable[[Mapping[str, Any]], Awaitable[None]]
    ) -> None:
        try:
            await super().send_response(response, send)
        finally:
            if isinstance(response, HttpResponse):
                response.content = b""

    async def listen_for_disconnect(self, receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
        try:
            message = await receive()
        except asyncio.CancelledError:  # the answer went out first: nothing left to listen for
            return
        if message["type"] != "http.disconnect":
            raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application
django_app = CycleFreeASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - after Django set-up
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import reverse  # noqa: E402

from core.collector import collector_for_serving  # noqa: E402
from core.protocol import Close  # noqa: E402
from core.state import RUNTIME_KEY  # noqa: E402
from hub.config import HubConfig  # noqa: E402
from hub.roles import Role  # noqa: E402
from hub.routing import websocket_routes  # noqa: E402
from hub.runtime import HubRuntime, hub_runtime  # noqa: E402
from transports.bodies import BodyLimit  # noqa: E402

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class WebSocketCap:
    """At most HUB_MAX_CONNECTIONS open WebSockets per process; past it the handshake is denied with 503.

    uvicorn's limit_concurrency does not count WebSocket upgrades, so connection floods are bounded here.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.open = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.open >= self.limit:
            await _deny_websocket(scope, receive, send, 503, b"too many connections; retry later")
            return
        self.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, status: int, body: bytes) -> None:
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [(b"content-type", b"text/plain"), (b"retry-after", b"5")]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": Close.TRY_AGAIN_LATER})


def protocol_router(role: Role) -> ProtocolTypeRouter:
    """HTTP (Django, bodies bounded before they are read) and the WebSocket routes of this role. Static files
    (plotly.js, dashboard scripts) are served in-process so the hub needs nothing in front of it; a proxy or CDN in
    front may serve STATIC_ROOT instead (docs/deployment.md)."""
    return ProtocolTypeRouter(
        {
            # The bulk import's body may be larger than any other request's (docs/api.md): its own limit.
            "http": BodyLimit(
                ASGIStaticFilesHandler(django_app),
                larger={reverse("api:devices-bulk"): settings.HUB_API_BULK_MAX_BYTES},
            ),
            "websocket": WebSocketCap(URLRouter(websocket_routes(role)), settings.HUB_MAX_CONNECTIONS),
        }
    )


class HubApplication:
    """The hub as an ASGI application: its lifespan runs the runtime (built here from settings, or `runtime`, built
    and stopped by whoever hands it in: the demo, the tests) and hands it to every connection."""

    def __init__(self, role: Role, *, runtime: HubRuntime | None = None) -> None:
        self.role = role
        self.runtime = runtime
        self.router = protocol_router(role)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
        else:
            await self.router(scope, receive, send)

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start the runtime with the server (or report why it could not); stop it, writer drained, on shutdown."""
        stack = contextlib.AsyncExitStack()
        await receive()  # lifespan.startup
        try:
            if "state" not in scope:
                raise RuntimeError("the server passes no lifespan state (uvicorn >= 0.21 does)")
            runtime = self.runtime
            if runtime is None:
                runtime = await stack.enter_async_context(hub_runtime(HubConfig.from_settings(role=self.role)))
                stack.enter_context(collector_for_serving())
            scope["state"][RUNTIME_KEY] = runtime
        except Exception as exc:
            logger.exception("hub start-up failed")
            await stack.aclose()
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


application = HubApplication(Role(settings.HUB_ROLE))
