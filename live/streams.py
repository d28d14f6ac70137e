"""Dashboard streams: a logged-in operator's WebSocket following one device, or the whole fleet, live.

Device protocol (docs/stream-protocol.md): the server follows the device's group, then the client sends
`{"since": <ts of the newest reading it has>}`; the server answers with the readings committed after it
(`history`), then forwards live readings, dropping the ones the history already carried. Streams do not
subscribe to the channel layer themselves: the process's `Broadcaster` (dashboards/broadcast.py) follows the
groups for them and hands each stream messages encoded once per tick; sends go through the stream's bounded
`Outbox`, so a browser that stops reading is closed (4008) instead of growing the hub's memory. What the streams
of a process share (`Streams`) comes with the connection's scope (core/state.py). Group names, message shapes and
close codes: core/protocol.py.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import orjson
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import connection

from accounts.policy import NOBODY, Action, Actor, actor_of
from core.epoch import MAX_MS
from core.logs import ThrottledLog
from core.protocol import ALERTS_GROUP, FLEET_GROUP, FRAME_EXTENSION, Close, WireReading, device_group
from core.state import runtime_in
from devices.models import Device
from history.selectors import readings_since
from live.broadcast import FRAGMENT_READINGS, Broadcaster, Outbox, Readings
from live.config import StreamConfig
from live.scopes import Keys, ScopeWatch

logger = logging.getLogger(__name__)

_DEDUPE_SECONDS = 30.0  # history identities are kept this long to drop live duplicates
Identity = tuple[str, int]  # (key, ts)
T = TypeVar("T")


class Streams:
    """What the dashboard streams of one process share: the broadcaster, the catch-up threads, the limits."""

    def __init__(self, broadcaster: Broadcaster, config: StreamConfig) -> None:
        self.broadcaster = broadcaster
        self.config = config
        self.refused = ThrottledLog(logger)  # streams refused while the channel layer is down
        # Catch-up queries run here, not on Channels' one database thread for the whole process, where each took
        # its turn behind every other stream's (a burst of viewers opening queued seconds of them, and held a
        # SIGTERM).
        self._threads = ThreadPoolExecutor(max_workers=config.catch_up_threads, thread_name_prefix="hub-catch-up")
        self.scopes = ScopeWatch(config.scope_refresh_seconds, self.run_query)

    async def run_query(self, query: Callable[..., T], *args: object) -> T:
        """A database query on the streams' own threads, its connection given back at once (see `_caught_up`)."""
        return await database_sync_to_async(_closing, thread_sensitive=False, executor=self._threads)(query, *args)

    async def catch_up(self, device_id: int, since: int) -> list[list]:
        query = database_sync_to_async(_caught_up, thread_sensitive=False, executor=self._threads)
        return await query(device_id=device_id, since=since, limit=self.config.catch_up_limit)

    def close(self) -> None:
        """No new catch-up starts; one already running ends in its thread, unobserved."""
        self.scopes.close()
        self._threads.shutdown(wait=False, cancel_futures=True)


def _caught_up(*, device_id: int, since: int, limit: int) -> list[list]:
    """The catch-up query, its connection given back at once: these threads end with the runtime, and a connection
    a thread still held then would stay open."""
    try:
        return readings_since(device_id=device_id, since=since, limit=limit)
    finally:
        connection.close()


def _closing(query: Callable[..., T], *args: object) -> T:
    """`query(*args)`, then its thread's connection closed (given back to the pool), as `_caught_up` does."""
    try:
        return query(*args)
    finally:
        connection.close()


def frame_writer(scope: dict) -> Callable[[bytes], bool] | None:
    """The server's way to write an encoded frame straight to this socket (hub/protocols.py), if it has one."""
    return scope.get("extensions", {}).get(FRAME_EXTENSION, {}).get("write")


def streams_in(scope: dict) -> Streams:
    """This process's `Streams` (None when it serves no dashboard streams: routing never sends one here)."""
    return runtime_in(scope).streams


def unseen(readings: list[WireReading], seen: set[Identity]) -> list[WireReading]:
    """Live readings not already sent with the history (a reading committed during the catch-up query
    is in the query's result and may also arrive live: it must appear once)."""
    return [r for r in readings if (r[1], r[0]) not in seen]


class BoundedStreamConsumer(AsyncWebsocketConsumer):
    """A session-authenticated stream fed by the process's broadcaster through a bounded outbox."""

    # No channel of its own on the layer (no per-socket subscription or receive task): the broadcaster
    # follows the groups for every stream of the process.
    channel_layer_alias = "no-channel-layer"
    streams: Streams
    broadcaster: Broadcaster | None = None
    outbox: Outbox | None = None
    actor: Actor = NOBODY
    visible: Keys | None = None  # the keys of a scoped person's devices; None: every device

    async def dispatch(self, message) -> None:
        # Channels hops to its one database thread (close_old_connections) before every message; nothing here
        # touches the ORM but through database_sync_to_async, which closes stale connections itself. Skipping
        # the hop keeps a stream's disconnect from queueing behind other streams' catch-up queries.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message) -> None:
        await self.disconnect(message["code"])  # Channels' own version hops to the database thread once more
        raise StopConsumer

    async def authenticated(self) -> bool:
        self.streams = streams_in(self.scope)
        await self.accept()  # accept first so the browser sees the close code
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=Close.UNAUTHENTICATED)
            return False
        self.actor = await self.streams.run_query(actor_of, user)
        if not self.actor.may(Action.VIEW):
            await self.close(code=Close.TOKEN_REVOKED)  # 4403: this person may not watch (final)
            return False
        session_key = self.scope["session_key"]  # live/sessions.py: the session the user was read from
        self.visible = await self.streams.scopes.watch(self, user.pk, session_key, self.actor.scope)
        return True

    def scope_seen(self, keys: Keys | None) -> None:
        """A refresh of the devices the person's scope covers (live/scopes.py)."""
        self.visible = keys

    def role_lost(self) -> None:
        """The person lost their role, or was deactivated or deleted: closed with 4403 (final)."""
        asyncio.get_running_loop().create_task(self._close_with(Close.TOKEN_REVOKED))

    def session_ended(self) -> None:
        """Its session ended (logged out, perhaps in another tab, or expired): closed with 4401 (final)."""
        asyncio.get_running_loop().create_task(self._close_with(Close.UNAUTHENTICATED))

    async def _close_with(self, code: int) -> None:
        await self._leave()
        await self.close(code=code)

    async def subscribe(self, *groups: str) -> bool:
        """Follow the groups (before any database query, so nothing slips between). False (and the socket
        closed with 4011, so the browser retries) when the channel layer is down."""
        config, broadcaster = self.streams.config, self.streams.broadcaster
        self.outbox = Outbox(
            self._send_text,
            self.too_slow,
            max_chars=config.max_pending_chars,
            stall=config.stall_seconds,
            sent=broadcaster.sent,
            write_frame=frame_writer(self.scope),
        )
        try:
            await broadcaster.follow(self, *groups)
        except Exception as exc:
            self.streams.refused.warning("dashboard stream refused: channel layer unavailable (%r)", exc)
            await self.close(code=Close.STREAM_INTERRUPTED)
            return False
        self.broadcaster = broadcaster
        return True

    def post(self, payload: dict) -> None:
        """A message for this stream only (encoded here: subscribed, history)."""
        self.take_message(orjson.dumps(payload).decode())

    def take_message(self, text: str) -> None:
        if self.outbox is not None:
            self.outbox.add(text)

    def take_readings(self, batch: Readings) -> None:
        if self.outbox is not None:
            self.outbox.add_readings(batch)

    def too_slow(self) -> None:
        """This browser stopped reading: stop following at once (the close itself waits for its socket to take
        the close frame), close with 4008; it catches up from the database when it returns."""
        asyncio.get_running_loop().create_task(self._close_with(Close.TOO_SLOW))

    async def _leave(self) -> None:
        if self.outbox is not None:
            self.outbox.discard()
        if self.broadcaster is not None:
            broadcaster, self.broadcaster = self.broadcaster, None
            await broadcaster.unfollow(self)

    async def _send_text(self, text: str) -> None:
        # Straight to the server (Channels' send() only wraps it): this runs for every viewer of every tick.
        await self.base_send({"type": "websocket.send", "text": text})

    async def disconnect(self, code: int) -> None:
        self.streams.scopes.forget(self)
        await self._leave()


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
        self.device_id = None if self.visible is not None and key not in self.visible else await _device_id(key)
        if self.device_id is None:  # out of the person's scope: as unknown
            await self.close(code=Close.UNKNOWN_DEVICE)
            return
        self.caught_up = False
        self.held: list[WireReading] = []  # live readings that arrive before the catch-up is sent
        self.seen: set[Identity] = set()
        self.seen_until = 0.0
        if await self.subscribe(device_group(key)):  # follow first, then query
            self.post({"type": "subscribed", "device": key})

    def scope_seen(self, keys: Keys | None) -> None:
        """Its device left the person's scope: closed as unknown (final), at once."""
        if keys is not None and self.scope["url_route"]["kwargs"]["key"] not in keys:
            self.streams.scopes.forget(self)
            asyncio.get_running_loop().create_task(self._close_with(Close.UNKNOWN_DEVICE))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            since = int(orjson.loads(text_data or "")["since"])
        except (ValueError, KeyError, TypeError, OverflowError, orjson.JSONDecodeError):
            since = -1
        if not 0 <= since <= MAX_MS:  # e.g. 1e308, which no datetime holds
            await self.close(code=Close.BAD_REQUEST)
            return
        # The catch-up runs beside the dispatch loop, not in it: while its query waits for a thread the stream
        # still takes its disconnect (a browser leaving, a SIGTERM), and live readings go to `held` meanwhile.
        if self.catching_up is not None:
            self.catching_up.cancel()
        self.catching_up = asyncio.create_task(self._catch_up(since))

    async def _catch_up(self, since: int) -> None:
        assert self.device_id is not None  # noqa: S101 - set by connect before any frame is taken
        try:
            history = await self.streams.catch_up(self.device_id, since)
        except Exception:
            logger.warning("dashboard catch-up failed; the browser retries", exc_info=True)
            await self.close(code=Close.STREAM_INTERRUPTED)
            return
        self.seen = {(key, ts) for ts, key, _v in history}
        self.seen_until = time.monotonic() + _DEDUPE_SECONDS
        self.post({"type": "history", "since": since, "readings": history})
        held, self.held, self.caught_up = self.held, [], True
        for i in range(0, len(held), FRAGMENT_READINGS):
            self.take_readings(Readings(held[i : i + FRAGMENT_READINGS]))

    def take_readings(self, batch: Readings) -> None:
        if not self.caught_up:
            if len(self.held) + len(batch.readings) > self.streams.config.catch_up_limit:
                self.too_slow()
            else:
                self.held.extend(batch.readings)
            return
        if self.seen and time.monotonic() < self.seen_until:
            fresh = unseen(batch.readings, self.seen)  # shared with other streams: re-encoded only when it differs
            if len(fresh) != len(batch.readings):
                if not fresh:
                    return
                batch = Readings(fresh)
        else:
            self.seen = set()
        super().take_readings(batch)


class FleetStreamConsumer(BoundedStreamConsumer):
    """`/ws/v1/fleet/stream`: every hub process's fleet digests and every alert event, live."""

    async def connect(self) -> None:
        if not await self.authenticated():
            return
        if await self.subscribe(FLEET_GROUP, ALERTS_GROUP):
            self.post({"type": "subscribed"})


@database_sync_to_async
def _device_id(key: str) -> int | None:
    return Device.objects.filter(key=key).values_list("id", flat=True).first()
