"""Live fan-out to dashboard streams whose cost does not grow with viewers × messages.

One `Broadcaster` per process is the only subscriber on the channel layer: it joins a group when the first
local stream follows it and leaves with the last. Committed readings that arrive for a device are merged
and, once per tick (HUB_STREAM_TICK_MS, 100 ms: ≤ 10 updates/s per device stream; each device in its own
slot of the tick, `TickSchedule`), encoded once and handed to every stream following that device. Each
stream has an `Outbox`: while its socket is busy, what arrives merges into fewer, larger messages (never
dropped); a stream whose socket takes nothing for HUB_STREAM_STALL_SECONDS (or with more than
HUB_STREAM_MAX_PENDING_KIB waiting) has stopped reading and is closed with 4008, and its browser catches up
from the database. No task exists for an idle stream, and no queue or chain of tasks grows with how far
behind the slowest viewer is. A stream whose socket is idle gets a device's tick as one WebSocket frame built
once for all of them and written straight to its socket (`Readings.frame`, `Outbox.add_readings`): at thousands
of viewers the per-send work through the ASGI layers was most of the stream process's time.
"""

import asyncio
import contextlib
import logging
import math
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
from channels.layers import BaseChannelLayer
from websockets.frames import Frame, Opcode

from core import metrics
from core.epoch import now_ms
from core.logs import ThrottledLog
from core.protocol import ALERTS_GROUP, FLEET_GROUP, Close, WireReading, device_group

logger = logging.getLogger(__name__)

# A stream message stays under ~256 KiB however far behind its viewer is (clients cap messages: websockets at
# 1 MiB by default): readings are encoded in fragments of at most 1,000 and merged up to that size.
FRAGMENT_READINGS = 1_000
MESSAGE_CHARS = 256 * 1024


def readings_message(*fragments: str) -> str:
    """The `readings` message of one or more fragments (JSON arrays of readings without their brackets)."""
    return '{"type":"readings","readings":[' + ",".join(fragments) + "]}"


class Readings:
    """Readings of one device as every stream following it gets them, encoded once: `fragment` is their JSON array
    without its brackets (busy outboxes merge fragments), `frame()` the whole message as an unmasked WebSocket text
    frame, built on first use and written as it is to every idle socket."""

    __slots__ = ("fragment", "readings", "_frame")

    def __init__(self, readings: list[WireReading]) -> None:
        self.readings = readings
        self.fragment = orjson.dumps(readings).decode()[1:-1]
        self._frame: bytes | None = None

    def frame(self) -> bytes:
        if self._frame is None:
            data = readings_message(self.fragment).encode()
            self._frame = Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])
        return self._frame


class Stream(Protocol):
    """What the broadcaster needs of a dashboard stream (dashboards/consumers.py)."""

    outbox: "Outbox | None"
    visible: frozenset[str] | None  # a scoped person's device keys (live/scopes.py); None: every device

    def take_readings(self, batch: Readings) -> None:
        """Readings of its device (shared by every stream of the device: encoded once)."""

    def take_message(self, text: str) -> None:
        """A whole message (an alert event, a fleet digest), encoded once for every follower."""

    async def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Sent:
    """Messages sent by the outboxes of a broadcaster since it last added them to the metric: one counter update
    a second, not one per message."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Outbox:
    """One stream's pending output, sent in order by a task that exists only while there is something to send.

    Readings queued back to back leave as one `readings` message (their fragments joined, no re-encoding):
    a viewer whose socket is slower than the ticks gets fewer, larger messages. A viewer whose socket has not
    taken a message for `stall` seconds (`stalled()`, which the broadcaster asks about every stream once a
    second: cheaper than a timer per send), or with more than `max_chars` waiting, has stopped reading and is
    closed. (Fragments are shared between streams: what waits costs little per viewer.)

    `write_frame` (the server's, when it offers one: hub/protocols.py) writes an encoded frame straight to the
    socket unless its buffer is full; readings that find the outbox idle go that way, with no task and no
    encoding of their own. Anything else, or a refused frame, queues and goes through `send`, in order.
    """

    __slots__ = (
        "_sent",
        "_send",
        "_overflow",
        "_max_chars",
        "_stall",
        "_items",
        "_chars",
        "_sender",
        "_sending_since",
        "_write_frame",
        "closed",
    )

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        overflow: Callable[[], None],
        *,
        max_chars: int,
        stall: float,
        sent: "Sent | None" = None,
        write_frame: Callable[[bytes], bool] | None = None,
    ) -> None:
        self._sent = sent if sent is not None else Sent()
        self._write_frame = write_frame
        self._send = send
        self._overflow = overflow
        self._max_chars = max_chars
        self._stall = stall
        self._items: deque[tuple[bool, str]] = deque()  # (is a readings fragment, text)
        self._chars = 0
        self._sender: asyncio.Task[None] | None = None
        self._sending_since: float | None = None  # loop time the send in progress began
        self.closed = False

    def add(self, text: str, *, fragment: bool = False) -> None:
        if self.closed:
            return
        self._items.append((fragment, text))
        self._chars += len(text)
        if self._sender is None:  # idle: whatever size, it goes out now
            self._sender = asyncio.get_running_loop().create_task(self._drain())
        elif self._chars > self._max_chars:  # the memory bound: this much waits behind a send
            self._stopped_reading()

    @property
    def writes_frames(self) -> bool:
        """Whether the server lets this outbox write shared frames straight to its socket."""
        return self._write_frame is not None

    def add_readings(self, batch: Readings) -> None:
        idle = self._sender is None and not self.closed  # so nothing is queued ahead of it
        if idle and self._write_frame is not None and self._write_frame(batch.frame()):
            self._sent.count += 1
            return
        self.add(batch.fragment, fragment=True)

    def stalled(self, now: float) -> bool:
        """Whether the socket has taken nothing for `stall` seconds (loop time `now`); if so it is given up."""
        if self._sending_since is not None and now - self._sending_since > self._stall:
            self._stopped_reading()
        return self.closed

    def _stopped_reading(self) -> None:
        if not self.closed:
            self.discard()
            metrics.STREAM_SLOW_CLOSED.inc()
            self._overflow()

    def discard(self) -> None:
        """Nothing more is sent (the stream is closing)."""
        self.closed = True
        self._items.clear()
        self._chars = 0
        self._sending_since = None
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None

    def _next(self) -> str:
        fragment, text = self._items.popleft()
        self._chars -= len(text)
        if not fragment:
            return text
        parts, size = [text], len(text)
        while self._items and self._items[0][0] and size + len(self._items[0][1]) < MESSAGE_CHARS:
            parts.append(self._items.popleft()[1])
            self._chars -= len(parts[-1])
            size += len(parts[-1])
        if len(parts) > 1:
            metrics.STREAM_MERGED.inc()
        return readings_message(*parts)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._items:
                self._sending_since = loop.time()
                await self._send(self._next())
                self._sent.count += 1
        except Exception:  # the socket went away: disconnect cleans up
            self._items.clear()
            self._chars = 0
        finally:
            self._sender = None
            self._sending_since = None


class TickSchedule:
    """When each device's pending readings are handed out: at most once a tick, each device in its own slot.

    The tick is cut into `SLOTS` slots and a device keeps one (a hash of its key), so a process following
    many devices hands them out a slot at a time rather than all at once: with 2,000 viewers one tick's
    sends were one 50 ms burst, whose last viewer waited for all of it. A device idle for two ticks goes
    out at once (a quiet device is not made to wait for its slot); after that it settles into its slot,
    never sooner than half a tick after its previous hand-out. Time is the event loop's, in seconds.
    """

    SLOTS = 10

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._slot_seconds = tick / self.SLOTS
        self._slots: list[dict[str, list[WireReading]]] = [{} for _ in range(self.SLOTS)]
        self._now: dict[str, list[WireReading]] = {}  # devices that were idle: out at the next hand-out
        self._last: dict[str, float] = {}  # device key -> its latest hand-out (pruned after two idle ticks)
        self._done: int | None = None  # the last slot (counted from the loop's epoch) handed out
        self.oldest: dict[str, int] = {}  # device key -> `at` of its oldest pending batch (for the lag metric)

    def _slot(self, key: str) -> dict[str, list[WireReading]]:
        return self._slots[zlib.crc32(key.encode()) % self.SLOTS]

    def add(self, key: str, readings: list[WireReading], at: int, now: float) -> bool:
        """Queue a device's readings (in arrival order); True when they are due at once."""
        self.oldest.setdefault(key, at)
        slot = self._slot(key)
        if key in slot:
            slot[key].extend(readings)
            return False
        if key in self._now or now - self._last.get(key, -math.inf) >= 2 * self.tick:
            self._now.setdefault(key, []).extend(readings)
            return True
        slot[key] = list(readings)
        return False

    def waiting(self) -> bool:
        return any(self._slots)

    def until_next_slot(self, now: float) -> float:
        return (math.floor(now / self._slot_seconds) + 1) * self._slot_seconds - now

    def take(self, now: float) -> dict[str, list[WireReading]]:
        """The readings due at `now`, per device: the idle devices', and those of every slot reached since the
        previous call whose device has not been handed out in the last half tick."""
        due, self._now = self._now, {}
        current = math.floor(now / self._slot_seconds)
        first = current - self.SLOTS + 1 if self._done is None else max(self._done + 1, current - self.SLOTS + 1)
        for index in range(first, current + 1):
            slot = self._slots[index % self.SLOTS]
            for key in [k for k in slot if now - self._last.get(k, -math.inf) >= self.tick / 2]:
                due[key] = slot.pop(key)
        self._done = current
        for key in due:
            self._last[key] = now
        return due

    def forget_idle(self, now: float) -> None:
        """Drop the hand-out times of devices idle for two ticks (they count as never handed out)."""
        self._last = {key: at for key, at in self._last.items() if now - at < 2 * self.tick}

    def clear(self) -> None:
        for slot in self._slots:
            slot.clear()
        self._now.clear()
        self.oldest.clear()


class Broadcaster:
    """This process's one channel-layer subscriber for every dashboard stream it serves."""

    def __init__(
        self, layer: BaseChannelLayer | None, *, tick_seconds: float, stall_check_seconds: float = 1.0
    ) -> None:
        self._layer = layer
        self.sent = Sent()  # shared by the outboxes of this broadcaster's streams
        self._stall_check = stall_check_seconds
        self._channel: str | None = None
        self._followers: dict[str, set[Stream]] = {}  # group -> local streams
        self._joined: set[str] = set()  # groups the channel is in on the layer
        self._membership = asyncio.Lock()
        self._schedule = TickSchedule(tick_seconds)  # device key -> readings not yet handed out, and when
        self._arrived = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._stall_watch: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._failures = ThrottledLog(logger)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ticker = loop.create_task(self._hand_out(), name="hub-stream-tick")
        self._stall_watch = loop.create_task(self._watch_stalls(), name="hub-stream-stalls")

    async def close(self) -> None:
        tasks = [task for task in (self._ticker, self._stall_watch, self._receiver) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ticker = self._stall_watch = self._receiver = None

    async def _subscribed(self) -> str:
        """This process's channel on the layer, made (and listened to) when a stream first needs it: Redis may
        be down when the process starts, and after a layer interruption a fresh one replaces it."""
        layer = self._the_layer()
        if self._channel is None:
            channel = await layer.new_channel()
            if self._channel is None:  # another stream may have made it meanwhile
                self._channel = channel
                self._receiver = asyncio.get_running_loop().create_task(self._receive(channel), name="hub-streams")
        return self._channel

    def _the_layer(self) -> BaseChannelLayer:
        """The channel layer; every stream needs one (a channel exists only once the layer made it)."""
        if self._layer is None:
            raise RuntimeError("no channel layer: live streams are not served by this process")
        return self._layer

    # Streams -------------------------------------------------------------------------------------------

    async def follow(self, stream: Stream, *groups: str) -> None:
        """Join the groups for this stream (the layer's join on the first follower); raises if the layer does.

        Joins and leaves take turns (`_membership`): a leave still on its way to Redis must not undo the join
        of a stream that follows the same group meanwhile."""
        async with self._membership:
            channel = await self._subscribed()
            for group in groups:
                if group not in self._joined:
                    await self._the_layer().group_add(group, channel)
                    self._joined.add(group)
            for group in groups:
                self._followers.setdefault(group, set()).add(stream)
        metrics.CONNECTED_DASHBOARDS.inc()

    async def unfollow(self, stream: Stream) -> None:
        metrics.CONNECTED_DASHBOARDS.dec()
        async with self._membership:
            for group, followers in list(self._followers.items()):
                followers.discard(stream)
                if not followers:
                    del self._followers[group]
                    if group in self._joined and self._channel is not None:
                        self._joined.discard(group)
                        with contextlib.suppress(Exception):
                            await self._the_layer().group_discard(group, self._channel)

    def __len__(self) -> int:
        return len(self._streams())

    def _streams(self) -> set[Stream]:
        """Every stream of the process, once (a fleet stream follows two groups)."""
        return {stream for followers in self._followers.values() for stream in followers}

    async def interrupt(self) -> int:
        """Close every stream with 4011 (live messages may have been lost: they reconnect and catch up), and
        start over with a fresh channel: whatever the layer held for the old one is not to be trusted."""
        streams = self._streams()
        self._followers.clear()
        self._joined.clear()
        self._schedule.clear()
        self._channel = None
        if self._receiver is not None:
            self._receiver.cancel()
            self._receiver = None
        for stream in streams:
            with contextlib.suppress(Exception):
                await stream.close(code=Close.STREAM_INTERRUPTED)
        return len(streams)

    async def rejoin(self) -> None:
        """Join every followed group again (the core layer forgets members after its group expiry)."""
        if self._channel is not None:
            for group in list(self._joined):
                await self._the_layer().group_add(group, self._channel)

    # The layer -----------------------------------------------------------------------------------------

    async def _receive(self, channel: str) -> None:
        layer = self._the_layer()
        while channel == self._channel:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the watchdog closes the streams and resets the channel
                self._failures.warning("dashboard streams: channel layer receive failed (%r)", exc, exc_info=True)
                await asyncio.sleep(0.5)
                continue
            self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "readings.batch":
            key = message["device"]
            if device_group(key) in self._followers:
                waiting = self._schedule.waiting()  # if so, the hand-out is already timed for the next slot
                now = asyncio.get_running_loop().time()
                if self._schedule.add(key, message["readings"], message.get("at", now_ms()), now) or not waiting:
                    self._arrived.set()
        elif kind == "readings.gap":
            for stream in list(self._followers.get(device_group(message["device"]), ())):
                asyncio.get_running_loop().create_task(stream.close(code=Close.STREAM_INTERRUPTED))
        elif kind == "alert.event":
            event = message["event"]
            group = ALERTS_GROUP if message.get("audience") == "fleet" else device_group(event["device"])
            self._to_all(group, {"type": "alert", "event": event})
        elif kind == "fleet.digest":
            self._to_all(FLEET_GROUP, {"type": "fleet", "devices": message["devices"]})

    def _to_all(self, group: str, payload: dict) -> None:
        followers = self._followers.get(group)
        if not followers:
            return
        text = ""
        narrowed: dict[frozenset[str], str] = {}  # one encoding per scope, however many of its streams
        for stream in list(followers):
            visible = stream.visible
            if visible is None:
                text = text or orjson.dumps(payload).decode()  # once, whatever the number of followers
                stream.take_message(text)
                continue
            if visible not in narrowed:
                narrowed[visible] = _narrowed(payload, visible)
            if narrowed[visible]:
                stream.take_message(narrowed[visible])

    async def _watch_stalls(self) -> None:
        """Give up the streams whose socket has taken nothing for their stall time (each closes itself)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._stall_check)
            metrics.STREAM_MESSAGES.inc(self.sent.count)
            self.sent.count = 0
            now = loop.time()
            for stream in self._streams():
                if stream.outbox is not None:
                    stream.outbox.stalled(now)
            self._schedule.forget_idle(now)

    async def _hand_out(self) -> None:
        """Each device's merged readings when its slot comes (TickSchedule): encoded once, handed to each of its
        streams. A process that falls behind hands out more readings per slot instead of more slots."""
        loop = asyncio.get_running_loop()
        schedule = self._schedule
        while True:
            if schedule.waiting():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(schedule.until_next_slot(loop.time())):
                        await self._arrived.wait()
            else:
                await self._arrived.wait()
            self._arrived.clear()
            now = now_ms()
            for key, readings in schedule.take(loop.time()).items():
                oldest = schedule.oldest.pop(key, now)
                followers = self._followers.get(device_group(key))
                if not followers:
                    continue
                metrics.STREAM_LAG_SECONDS.observe(max(0, now - oldest) / 1000)
                for i in range(0, len(readings), FRAGMENT_READINGS):
                    batch = Readings(readings[i : i + FRAGMENT_READINGS])
                    for stream in list(followers):
                        stream.take_readings(batch)


def _narrowed(payload: dict, visible: frozenset[str]) -> str:
    """A fleet digest or an alert event as a scoped person's stream may see it: only their devices ("" when
    nothing is left)."""
    if payload.get("type") == "fleet":
        devices = {key: digest for key, digest in payload["devices"].items() if key in visible}
        return orjson.dumps({**payload, "devices": devices}).decode() if devices else ""
    event = payload.get("event")
    if isinstance(event, dict) and event.get("device") not in visible:
        return ""
    return orjson.dumps(payload).decode()
