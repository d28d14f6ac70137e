"""WebSocket ingest: authenticate by token, hand frames to the ingest service, send acks and errors."""

import asyncio
from typing import Any

import orjson
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

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


class TelemetryConsumer(AsyncWebsocketConsumer):
    """`/ws/v1/<TOKEN>/telemetry`: one text frame = one message; acks are cumulative after commit."""

    # Device sockets never receive channel-layer messages: no layer means no per-connection channel,
    # no Redis subscription and no receive task per socket (what lets one process hold 10,000 of them).
    channel_layer_alias = "no-channel-layer"
    device: DeviceIdentity
    ingest: Ingest
    sockets: OpenSockets
    acks: AckSequencer | None = None
    control: SocketControl | None = None

    async def __call__(self, scope, receive, send) -> None:
        # The ack task must end with the socket even when uvicorn cancels us without a disconnect event.
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()

    async def dispatch(self, message) -> None:
        # Channels closes stale ORM connections before every message through a thread hop; frames here
        # touch no ORM connection (the writer has its own pool), and that hop cost ~30% of CPU at scale.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        transports = transports_in(self.scope)
        device = await device_authenticate(token=self.scope["url_route"]["kwargs"]["token"])
        if device is None or transports is None:
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return
        self.device = device
        self.ingest = transports.ingest
        self.sockets = transports.sockets
        self.frames = 0
        self.acks = AckSequencer(
            self._send_json, self._on_commit_failure, max_inflight=transports.config.max_inflight_frames
        )
        await self.accept()
        metrics.CONNECTED_DEVICES.labels("ws").inc()
        self.sockets.opened(device.token_hash, self._revoked)
        self.control = SocketControl(runtime_in(self.scope).control, device, self._send_json)
        self.control.open()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert self.acks is not None  # noqa: S101 - receive only follows an accepted connect
        self.frames += 1
        if text_data is None:
            error = IngestError(ErrorCode.UNSUPPORTED_FRAME, "send telemetry as text frames of JSON")
            metrics.MESSAGES_REJECTED.labels("ws", error.code).inc()
            await self.acks.rejected(self.frames, error)
            return
        if self.control is not None and is_control(text_data):
            # Done in its turn: its ack (or error frame) follows those of the frames before it.
            await self.acks.committed_later(self.frames, asyncio.ensure_future(self.control.frame(text_data)))
            return
        try:
            future = await self.ingest.message(device=self.device, body=text_data, transport="ws")
        except IngestError as error:
            await self.acks.rejected(self.frames, error)
            return
        await self.acks.committed_later(self.frames, future)

    async def disconnect(self, code: int) -> None:
        await self._release()

    async def _release(self) -> None:
        """Idempotent: the gauge, the revocation registry and the ack task of an accepted socket."""
        acks, self.acks = self.acks, None
        control, self.control = self.control, None
        if control is not None:
            await control.close()
        if acks is not None:
            metrics.CONNECTED_DEVICES.labels("ws").dec()
            self.sockets.closed(self.device.token_hash, self._revoked)
            await acks.close()

    async def _send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=orjson.dumps(payload).decode())

    async def _revoked(self) -> None:
        await self.close(code=Close.TOKEN_REVOKED)

    async def _on_commit_failure(self, exc: BaseException) -> None:
        if isinstance(exc, DeviceDeleted):
            code = Close.TOKEN_REVOKED  # as a rotated token: the device must not send again with it
        elif isinstance(exc, WriterClosed):
            code = Close.SERVICE_RESTART
        else:
            code = Close.INTERNAL_ERROR
        await self.close(code=code)
