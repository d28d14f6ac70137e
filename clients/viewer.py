"""A viewer's side of the dashboard streams, for the tests and the benches (docs/stream-protocol.md).

`ws://HOST/ws/v1/devices/<KEY>/stream` (one device) or `ws://HOST/ws/v1/fleet/stream` (every device): a browser opens
it with its session cookie and the hub's own Origin. The hub answers `subscribed` once it follows the groups; a
device stream then takes `{"since": <ts>}` and answers `history` (the committed readings after it) before any live
`readings`; both kinds also carry `alert` events, and the fleet stream `fleet` digests. The hub closes a stream
with a code of core/protocol.py `Close` (4401 not logged in, 4404 unknown device, 4008 too slow, 4011 catch up).

`StreamOpening` is the protocol without I/O (the benches' own sockets use it); `ViewerClient` is a websockets client.
"""

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

WireReading = list[Any]  # [ts, key, value]


def stream_url(base: str, key: str | None = None) -> str:
    """The stream of device `key` (or the fleet's) on the hub at `base` (http(s):// or ws(s)://)."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = f"/ws/v1/devices/{key}/stream" if key is not None else "/ws/v1/fleet/stream"
    return f"{scheme}://{parts.netloc}{path}"


def hub_origin(base: str) -> str:
    """The Origin of the hub's own pages (the only one a stream accepts by default)."""
    parts = urlsplit(base)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


def viewer_headers(base: str, cookie: str, origin: str | None = None) -> dict[str, str]:
    """What a browser sends with the handshake: its session cookie (`sessionid=...`) and the page's Origin."""
    return {"Cookie": cookie, "Origin": origin or hub_origin(base)}


class ProtocolViolation(Exception):
    """The hub answered something the stream protocol does not allow."""


class StreamClosed(ConnectionError):
    """The hub closed the stream (`code`: a Close code, or None when the connection just ended)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"the stream closed: {code} {reason}".strip())
        self.code = code
        self.reason = reason


class StreamOpening:
    """The start of a stream, without I/O: `subscribed`, then (a device stream) `since` → `history`; every later
    message is the caller's. `take(message)` checks the order and keeps what the history carried."""

    def __init__(self, *, device: bool) -> None:
        self.device = device
        self.subscribed = False
        self.history: list[WireReading] | None = None

    @staticmethod
    def since(ts: int) -> str:
        """The message that asks a device stream for what was committed after `ts` (ms)."""
        return orjson.dumps({"since": ts}).decode()

    def take(self, message: dict[str, Any]) -> bool:
        """True when `message` was part of the opening (subscribed, history); False for a live message."""
        kind = message.get("type")
        if not self.subscribed:
            if kind != "subscribed":
                raise ProtocolViolation(f"{kind!r} before `subscribed`")
            self.subscribed = True
            return True
        if kind == "history":
            if not self.device or self.history is not None:
                raise ProtocolViolation("an unasked or second `history`")
            self.history = message["readings"]
            return True
        if kind == "readings" and self.history is None:
            raise ProtocolViolation("live readings before the history")
        return False


class Socket(Protocol):
    """A stream's socket: text messages both ways; `recv` raises StreamClosed once the hub closed it."""

    async def send(self, text: str) -> None: ...
    async def recv(self) -> str: ...
    async def close(self) -> None: ...


class WebsocketsSocket:
    """A `Socket` over a websockets client connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def recv(self) -> str:
        try:
            raw = await self.ws.recv()
        except websockets.ConnectionClosed as closed:
            received = closed.rcvd
            raise StreamClosed(received.code if received else None, received.reason if received else "") from None
        return raw if isinstance(raw, str) else raw.decode()

    async def close(self) -> None:
        await self.ws.close()


class ViewerClient:
    """One dashboard stream, as a page follows it, over any `Socket` (a websockets connection: `connect()`; the
    tests' in-process one: Channels' WebsocketCommunicator)."""

    def __init__(self, socket: Socket, *, device: bool) -> None:
        self.socket = socket
        self.opening = StreamOpening(device=device)
        self._live: deque[dict[str, Any]] = deque()  # live messages that came while the history was awaited

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, base: str, *, cookie: str, key: str | None = None, origin: str | None = None, **options: Any
    ) -> AsyncIterator["ViewerClient"]:
        """A stream of device `key` (or the fleet's), `subscribed` already; raises StreamClosed when the hub closes
        it instead (4401, 4404), websockets.InvalidStatus when it refuses the handshake (a foreign Origin: 403).
        Leaving it closes the socket."""
        headers = viewer_headers(base, cookie, origin)
        async with websockets.connect(stream_url(base, key), additional_headers=headers, **options) as ws:
            yield await cls.opened(WebsocketsSocket(ws), device=key is not None)

    @classmethod
    async def opened(cls, socket: Socket, *, device: bool) -> "ViewerClient":
        """A client of a socket just opened: returns once the hub said `subscribed`."""
        client = cls(socket, device=device)
        client.opening.take(await client._next())
        return client

    async def catch_up(self, since: int) -> list[WireReading]:
        """Ask for what was committed after `since` (ms); returns the history's readings, [ts, key, value]."""
        await self.socket.send(StreamOpening.since(since))
        while self.opening.history is None:
            message = await self._next()
            if not self.opening.take(message):
                self._live.append(message)
        return self.opening.history

    async def receive(self) -> dict[str, Any]:
        """The next live message (`readings`, `alert`, `fleet`); StreamClosed when the hub closes the stream."""
        if self._live:
            return self._live.popleft()
        message = await self._next()
        self.opening.take(message)
        return message

    async def readings(self) -> AsyncIterator[list[WireReading]]:
        """The readings of each live `readings` message, until the stream closes (other messages skipped)."""
        while True:
            try:
                message = await self.receive()
            except StreamClosed:
                return
            if message["type"] == "readings":
                yield message["readings"]

    async def send(self, text: str) -> None:
        """A raw message (a page sends nothing but `since`: anything else is the hub's to refuse)."""
        await self.socket.send(text)

    async def closed(self) -> int | None:
        """Wait for the hub to close the stream (live messages meanwhile are dropped); returns its close code."""
        while True:
            try:
                await self.receive()
            except StreamClosed as closed:
                return closed.code

    async def close(self) -> None:
        await self.socket.close()

    async def _next(self) -> dict[str, Any]:
        message = orjson.loads(await self.socket.recv())
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolViolation(f"not a typed message: {message!r}")
        return message
