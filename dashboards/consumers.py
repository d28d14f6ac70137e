"""Dashboard streams: a logged-in operator's WebSocket following one device, or the whole fleet, live.

Device protocol (docs/stream-protocol.md): the server subscribes to the device's group, then the client sends
`{"since": <ts of the newest reading it has>}`; the server answers with the readings committed after it
(`history`), then forwards live readings, dropping the ones the history already carried. Sends go through
a bounded queue: a browser that stops reading is closed (4008) instead of growing the hub's memory. Group
names, message shapes and close codes: core/protocol.py.
"""

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from core import metrics
from core.logs import ThrottledLog
from core.protocol import (
    ALERTS_GROUP,
    FLEET_GROUP,
    AlertEventMessage,
    Close,
    FleetDigest,
    ReadingsBatch,
    ReadingsGap,
    WireReading,
    device_group,
)
from core.registry import current_runtime
from dashboards.watchdog import OpenStreams
from devices.models import Device
from ingest.selectors import readings_since

logger = logging.getLogger(__name__)
_layer_down = ThrottledLog(logger)

_DEDUPE_SECONDS = 30.0  # history identities are kept this long to drop live duplicates
Identity = tuple[str, int]  # (key, ts)
# Catch-up queries run here, not on Channels' one database thread for the whole process, where each took its
# turn behind every other stream's (a burst of viewers opening queued seconds of them, and held a SIGTERM).
_CATCH_UP_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hub-catch-up")


def unseen(readings: list[WireReading], seen: set[Identity]) -> list[WireReading]:
    """Live readings not already sent with the history (a reading committed during the catch-up query
    is in the query's result and may also arrive live: it must appear once)."""
    return [r for r in readings if (r[1], r[0]) not in seen]


class BoundedStreamConsumer(AsyncWebsocketConsumer):
    """Session-authenticated stream whose sends go through a bounded queue (a slow browser is closed)."""

    groups_joined: tuple[str, ...] = ()
    streams: OpenStreams | None = None
    sender: asyncio.Task[None] | None = None
    closing: asyncio.Task[None] | None = None  # the one close of a browser that stopped reading

    async def __call__(self, scope, receive, send) -> None:
        # Channels subscribes the consumer's own channel before any handler runs; with Redis away that raises
        # before `connect`. Refuse the stream (the browser backs off and retries) instead of a 500 traceback.
        try:
            await super().__call__(scope, receive, send)
        except (RedisError, OSError) as exc:
            _layer_down.warning("dashboard stream refused: channel layer unavailable (%r)", exc)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": Close.STREAM_INTERRUPTED})

    async def dispatch(self, message) -> None:
        # Channels hops to its one database thread (close_old_connections) before every message. A stream gets a
        # message per flush of its device: with hundreds of viewers those hops queue behind the catch-up queries,
        # and a stream takes its disconnect only when its hop comes (at SIGTERM uvicorn waited for them). No
        # handler here touches the ORM but through database_sync_to_async, which closes stale connections itself
        # (ingest/consumers.py skips the hop for the same reason).
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message) -> None:
        await self.disconnect(message["code"])  # Channels' own version hops to the database thread once more
        raise StopConsumer

    async def authenticated(self) -> bool:
        await self.accept()  # accept first so the browser sees the close code
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=Close.UNAUTHENTICATED)
            return False
        return True

    async def subscribe(self, *groups: str) -> bool:
        """Start the sender, then join the groups (before any database query, so nothing slips between).
        False (and the socket closed with 4011, so the browser retries) when the channel layer is down."""
        self.outbox: asyncio.Queue[str] = asyncio.Queue(settings.HUB_STREAM_QUEUE_MESSAGES)
        self.sender = asyncio.create_task(self._send_loop())
        self.groups_joined = groups
        metrics.CONNECTED_DASHBOARDS.inc()
        try:
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception as exc:
            _layer_down.warning("dashboard stream refused: channel layer unavailable (%r)", exc)
            await self.close(code=Close.STREAM_INTERRUPTED)
            return False
        self.streams = current_runtime().streams
        self.streams.opened(self)
        return True

    def post(self, payload: dict) -> None:
        try:
            self.outbox.put_nowait(orjson.dumps(payload).decode())
        except asyncio.QueueFull:
            if self.closing is None:
                self.closing = asyncio.get_running_loop().create_task(self.too_slow())

    async def too_slow(self) -> None:
        await self.close(code=Close.TOO_SLOW)

    async def _send_loop(self) -> None:
        while True:  # cancelled by disconnect
            await self.send(text_data=await self.outbox.get())

    async def alert_event(self, message: AlertEventMessage) -> None:
        self.post({"type": "alert", "event": message["event"]})

    async def disconnect(self, code: int) -> None:
        if self.streams is not None:
            self.streams.closed(self)
        if self.groups_joined:
            metrics.CONNECTED_DASHBOARDS.dec()
            for group in self.groups_joined:
                with contextlib.suppress(Exception):
                    await self.channel_layer.group_discard(group, self.channel_name)
            self.groups_joined = ()
        if self.sender is not None:
            self.sender.cancel()
            await asyncio.gather(self.sender, return_exceptions=True)


class DeviceStreamConsumer(BoundedStreamConsumer):
    """`/ws/v1/devices/<KEY>/stream` (session auth; Origin checked by the router)."""

    device_id: int | None = None
    catching_up: asyncio.Task[None] | None = None

    async def disconnect(self, code: int) -> None:
        if self.catching_up is not None:
            self.catching_up.cancel()  # not awaited: a query already running ends in its thread, unobserved
        await super().disconnect(code)

    async def connect(self) -> None:
        if not await self.authenticated():
            return
        key = self.scope["url_route"]["kwargs"]["key"]
        self.device_id = await _device_id(key)
        if self.device_id is None:
            await self.close(code=Close.UNKNOWN_DEVICE)
            return
        self.caught_up = False
        self.held: list[list] = []  # live readings that arrive before the catch-up is sent
        self.seen: set[Identity] = set()
        self.seen_until = 0.0
        if await self.subscribe(device_group(key)):  # subscribe first, then query
            self.post({"type": "subscribed", "device": key})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            since = int(orjson.loads(text_data or "")["since"])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            await self.close(code=Close.BAD_REQUEST)
            return
        # The catch-up runs beside the dispatch loop, not in it: while its query waits for a thread the stream
        # still takes its disconnect (a browser leaving, a SIGTERM), and live readings go to `held` meanwhile.
        if self.catching_up is not None:
            self.catching_up.cancel()
        self.catching_up = asyncio.create_task(self._catch_up(since))

    async def _catch_up(self, since: int) -> None:
        query = database_sync_to_async(readings_since, thread_sensitive=False, executor=_CATCH_UP_THREADS)
        try:
            history = await query(device_id=self.device_id, since=since)
        except Exception:
            logger.warning("dashboard catch-up failed; the browser retries", exc_info=True)
            await self.close(code=Close.STREAM_INTERRUPTED)
            return
        self.seen = {(key, ts) for ts, key, _v in history}
        self.seen_until = time.monotonic() + _DEDUPE_SECONDS
        self.post({"type": "history", "since": since, "readings": history})
        held, self.held, self.caught_up = self.held, [], True
        self._forward(held)

    async def readings_batch(self, message: ReadingsBatch) -> None:
        if self.caught_up:
            self._forward(message["readings"])
        elif len(self.held) < settings.HUB_STREAM_CATCHUP_LIMIT:
            self.held.extend(message["readings"])
        else:
            await self.too_slow()

    async def readings_gap(self, message: ReadingsGap) -> None:
        """The publisher dropped readings of this device: reconnect and catch up from the database."""
        await self.close(code=Close.STREAM_INTERRUPTED)

    def _forward(self, readings: list[list]) -> None:
        if self.seen and time.monotonic() < self.seen_until:
            readings = unseen(readings, self.seen)
        else:
            self.seen = set()
        if readings:
            self.post({"type": "readings", "readings": readings})


class FleetStreamConsumer(BoundedStreamConsumer):
    """`/ws/v1/fleet/stream`: every hub process's fleet digests and every alert event, live."""

    async def connect(self) -> None:
        if not await self.authenticated():
            return
        if await self.subscribe(FLEET_GROUP, ALERTS_GROUP):
            self.post({"type": "subscribed"})

    async def fleet_digest(self, message: FleetDigest) -> None:
        self.post({"type": "fleet", "devices": message["devices"]})


@database_sync_to_async
def _device_id(key: str) -> int | None:
    return Device.objects.filter(key=key).values_list("id", flat=True).first()
