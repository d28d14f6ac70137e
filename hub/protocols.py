"""uvicorn's protocols with the read deadlines uvicorn lacks.

uvicorn times out only an idle kept-alive connection (`timeout_keep_alive`, armed after a response). A connection
that never sends a byte, or sends a request's headers a byte every few seconds, or stops halfway through its body,
is never closed: 200 such sockets stayed open for as long as they were held, and with HUB_MAX_CONNECTIONS of them
every new request, /healthz included, was answered 503 (issue 17). Here a request's headers must arrive within
HUB_HTTP_HEADER_TIMEOUT_SECONDS of the connection (or of the request's first byte on a kept-alive one), its body
within HUB_HTTP_BODY_TIMEOUT_SECONDS of its headers, and a WebSocket handshake must be over within the header
timeout of the upgrade; otherwise the connection is closed (HTTP: after a 408 while no response has started).

And the other way: a client that stops reading an answer (a CSV export, a large page) fills the socket's buffer, and
the answer's sender waits; once it has waited HUB_HTTP_SEND_TIMEOUT_SECONDS in a row, the connection is closed, the
application is told the client left (Django cancels the streaming answer, which gives back its read slot), and
nothing more is sent (issue 22: four exports whose clients never read held the read pool and four transactions).
"""

import asyncio
import logging
from typing import Any

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from core import metrics
from core.protocol import FRAME_EXTENSION

logger = logging.getLogger(__name__)

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class TimedHttpProtocol(HttpToolsProtocol):
    """HTTP/1.1 (httptools, uvicorn's default) with a deadline for each request's headers and for its body."""

    _deadline: asyncio.TimerHandle | None = None
    _phase = "headers"
    _send_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers", settings.HUB_HTTP_HEADER_TIMEOUT_SECONDS)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request on a kept-alive connection: its first byte starts the clock
            self._arm("headers", settings.HUB_HTTP_HEADER_TIMEOUT_SECONDS)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body", settings.HUB_HTTP_BODY_TIMEOUT_SECONDS)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the WebSocket protocol bounds its own handshake
        super().handle_websocket_upgrade()
        # This protocol is done: its parser refers back to it, a cycle that would keep it and its request's headers
        # (1.6 KiB) until the collector's next pass, which on a hub of quiet sockets comes rarely (issue 26).
        del self.parser

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._send_deadline is not None:
            self._send_deadline.cancel()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The client's socket takes nothing more for now: it has the send timeout to take some again."""
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(settings.HUB_HTTP_SEND_TIMEOUT_SECONDS, self._not_reading)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _not_reading(self) -> None:
        self._send_deadline = None
        if self.transport.is_closing():
            return
        metrics.HTTP_READ_TIMEOUTS.labels("send").inc()
        logger.debug("closing a connection to %s: it read nothing of its answer for too long", self.client)
        self.transport.abort()  # close() would wait to flush what the client does not read

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        metrics.HTTP_READ_TIMEOUTS.labels(self._phase).inc()
        logger.debug("closing a connection from %s: its request %s took too long", self.client, self._phase)
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(_REQUEST_TIMEOUT)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's next receive() is http.disconnect; its sends are dropped
        self.transport.close()


class TimedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, closing a connection whose handshake is not over within the header timeout, and
    holding less while a socket is quiet (issue 26; bench/socket_memory.py): its event queue and write flag allocate
    nothing while empty (asyncio.Queue keeps four deques and an Event: 4 KiB of every socket), and the handshake's
    request headers, response and deadline go once it is accepted (another 3 KiB).

    It also offers the application `write_frame` (the FRAME_EXTENSION of its scope): a message framed once for
    thousands of dashboard streams is written as it is, not encoded and framed again per socket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        writable = _Flag()
        if self.writable.is_set():
            writable.set()
        self.writable = writable  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._handshake_deadline = self.loop.call_later(settings.HUB_HTTP_HEADER_TIMEOUT_SECONDS, self._timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshake_deadline.cancel()
        super().connection_lost(exc)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self._handshake_deadline.cancel()
            # Read only before the accept. The request stays referenced by websockets' parser (a local of the
            # generator that goes on parsing frames): its headers are emptied in place.
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]

    def _timed_out(self) -> None:
        if not self.handshake_complete and not self.transport.is_closing():
            metrics.HTTP_READ_TIMEOUTS.labels("handshake").inc()
            self.transport.close()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if hasattr(self, "scope"):  # the upgrade was valid: the application is about to run
            self.scope["extensions"][FRAME_EXTENSION] = {"write": self.write_frame}

    def write_frame(self, frame: bytes) -> bool:
        """Write `frame` (an encoded, unmasked server frame) now; False, and nothing written, while the socket
        is not open or its buffer is above the transport's high-water mark (then the caller sends through the
        protocol, which waits for the buffer to drain)."""
        if not self.writable.is_set() or self.close_sent or self.conn.state is not State.OPEN:
            return False
        if self.transport.is_closing():
            return False
        self.transport.write(frame)
        return True


class _Inbox:
    """What uvicorn's WebSocket protocol uses of its asyncio.Queue (put_nowait, get, empty, qsize)."""

    __slots__ = ("_arrived", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._arrived = _Flag()

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._arrived.set()

    async def get(self) -> Any:
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        return self._items.pop(0)  # rarely more than a few: the protocol stops reading past its high-water mark

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _Flag:
    """What uvicorn's WebSocket protocol uses of an asyncio.Event (set, clear, is_set, wait), without its deque."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
