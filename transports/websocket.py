"""WebSocket ingest: authenticate by token, hand frames to the ingest service, send acks and errors."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from core import metrics
from core.protocol import Close
from core.state import runtime_in
from devices.services import DeviceIdentity, device_authenticate
from ingest.parsing import ErrorCode, IngestError
from ingest.service import Ingest
from ingest.writer import DeviceDeleted, WriterClosed
from transports.acks import AckSequencer
from transports.revocation import OpenSockets
from transports.shared import transports_in
from transports.socket_control import SocketControl, is_control

Scope = dict[str, Any]
Event = dict[str, Any]
Receive = Callable[[], Awaitable[Event]]
Send = Callable[[Event], Awaitable[None]]


class DeviceSocket:
    """`/ws/v1/<TOKEN>/telemetry`: one text frame = one message; acks are cumulative after commit.

    A plain ASGI loop rather than a Channels consumer: Channels waits for each message with a task per
    receive and `asyncio.wait` (issue 26: a fifth of the hub's CPU at 24,000 single-reading frames/s), and
    keeps a consumer instance and a dispatch task per idle socket. A device socket needs neither: it never
    receives channel-layer messages and touches no ORM connection per frame.
    """

    __slots__ = ("_send", "acks", "control", "device", "frames", "ingest", "sockets")
    device: DeviceIdentity
    ingest: Ingest
    sockets: OpenSockets

    def __init__(self, send: Send) -> None:
        self._send = send
        self.frames = 0
        self.acks: AckSequencer | None = None
        self.control: SocketControl | None = None

    @classmethod
    async def app(cls, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application: one DeviceSocket per connection; its ack task ends with the socket."""
        socket = cls(send)
        try:
            if await socket.connect(scope, await receive()):
                await socket.serve(receive)
        finally:
            await socket.release()

    async def connect(self, scope: Scope, event: Event) -> bool:
        if event["type"] != "websocket.connect":
            return False
        transports = transports_in(scope)
        # In a task of its own: the thread hop copies the thread's context variables (Django's connections) back
        # into the caller's context, which a socket keeps for its whole life (about 2 KiB per idle device socket).
        device = await asyncio.ensure_future(device_authenticate(token=scope["url_route"]["kwargs"]["token"]))
        if device is None or transports is None:
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return False
        self.device = device
        self.ingest = transports.ingest
        self.sockets = transports.sockets
        inflight = transports.config.max_inflight_frames
        self.acks = AckSequencer(self._send_json, self._on_commit_failure, max_inflight=inflight)
        await self._send({"type": "websocket.accept"})
        # Nothing reads a device socket's headers after its handshake: the list the server and every router's
        # copy of the scope share is emptied, not kept for the socket's life (1.3 KiB per quiet device, issue 26).
        scope["headers"].clear()
        metrics.CONNECTED_DEVICES.labels("ws").inc()
        self.sockets.opened(device.token_hash, self._revoked)
        self.control = SocketControl(runtime_in(scope).control, device, self._send_json)
        self.control.open()
        return True

    async def serve(self, receive: Receive) -> None:
        while (event := await receive())["type"] == "websocket.receive":
            await self.receive(event.get("text"))

    async def receive(self, text: str | None) -> None:
        assert self.acks is not None  # noqa: S101 - receive only follows an accepted connect
        self.frames += 1
        if text is None:
            error = IngestError(ErrorCode.UNSUPPORTED_FRAME, "send telemetry as text frames of JSON")
            metrics.MESSAGES_REJECTED.labels("ws", error.code).inc()
            await self.acks.rejected(self.frames, error)
            return
        if self.control is not None and is_control(text):
            # Done in its turn: its ack (or error frame) follows those of the frames before it.
            await self.acks.committed_later(self.frames, asyncio.ensure_future(self.control.frame(text)))
            return
        try:
            future = await self.ingest.message(device=self.device, body=text, transport="ws")
        except IngestError as error:
            await self.acks.rejected(self.frames, error)
            return
        await self.acks.committed_later(self.frames, future)

    async def release(self) -> None:
        """Idempotent: the gauge, the revocation registry and the ack task of an accepted socket."""
        acks, self.acks = self.acks, None
        control, self.control = self.control, None
        if control is not None:
            await control.close()
        if acks is not None:
            metrics.CONNECTED_DEVICES.labels("ws").dec()
            self.sockets.closed(self.device.token_hash, self._revoked)
            await acks.close()

    async def close(self, code: int = 1000) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # already closed by the peer: nothing to tell it
            await self._send({"type": "websocket.close", "code": code})

    async def _send_json(self, payload: dict[str, Any]) -> None:
        await self._send({"type": "websocket.send", "text": orjson.dumps(payload).decode()})

    async def _revoked(self) -> None:
        await self.close(Close.TOKEN_REVOKED)

    async def _on_commit_failure(self, exc: BaseException) -> None:
        if isinstance(exc, DeviceDeleted):
            code = Close.TOKEN_REVOKED  # as a rotated token: the device must not send again with it
        elif isinstance(exc, WriterClosed):
            code = Close.SERVICE_RESTART
        else:
            code = Close.INTERNAL_ERROR
        await self.close(code)
