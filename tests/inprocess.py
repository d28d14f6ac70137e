"""The hub with no server: its ASGI app over a test's runtime, for protocol tests that need no TCP (an HTTP client
through httpx's ASGITransport, device and viewer sockets through Channels' WebsocketCommunicator)."""

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from channels.testing.websocket import WebsocketCommunicator

from clients.viewer import StreamClosed, ViewerClient, stream_url
from core.state import with_runtime
from hub.asgi import protocol_router
from hub.runtime import HubRuntime

HOST = "127.0.0.1"
ORIGIN = f"http://{HOST}"  # the origin of the hub's own pages, as in-process requests name the hub


def in_process(runtime: HubRuntime) -> Callable:
    """The hub's ASGI app serving `runtime`: each connection's scope carries it, as uvicorn's copy of the lifespan
    state would."""
    router = protocol_router(runtime.role)

    async def app(scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        await router(with_runtime(scope, runtime), receive, send)

    return app


@contextlib.asynccontextmanager
async def in_process_client(runtime: HubRuntime, *, cookie: str = "") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the in-process hub (as a browser with the session `cookie`, when given)."""
    transport = httpx.ASGITransport(app=in_process(runtime))
    headers = {"Cookie": cookie} if cookie else {}
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers=headers, timeout=60) as client:
        yield client


class CommunicatorSocket:
    """A `clients.viewer.Socket` through Channels' WebsocketCommunicator."""

    def __init__(self, communicator: WebsocketCommunicator, *, timeout: float = 10.0) -> None:
        self.communicator = communicator
        self.timeout = timeout

    async def send(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def recv(self) -> str:
        message = await self.communicator.receive_output(self.timeout)
        if message["type"] == "websocket.close":
            raise StreamClosed(message.get("code"))
        return message["text"]

    async def close(self) -> None:
        await self.communicator.disconnect()


class HandshakeRefused(ConnectionError):
    """The hub refused the WebSocket handshake (a server answers it with HTTP 403)."""


@contextlib.asynccontextmanager
async def viewer_in_process(
    runtime: HubRuntime, *, cookie: str, key: str | None = None, origin: str = ORIGIN
) -> AsyncIterator[ViewerClient]:
    """A dashboard stream of the in-process hub, `subscribed` (else StreamClosed, or HandshakeRefused)."""
    path = stream_url(ORIGIN, key).removeprefix(f"ws://{HOST}")
    headers = [(b"host", HOST.encode()), (b"cookie", cookie.encode()), (b"origin", origin.encode())]
    communicator = WebsocketCommunicator(in_process(runtime), path, headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    if not connected:
        raise HandshakeRefused(path)
    try:
        yield await ViewerClient.opened(CommunicatorSocket(communicator), device=key is not None)
    finally:
        await communicator.disconnect()
