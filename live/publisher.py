"""The one publisher: everything the channel layer carries goes out from here (docs/stream-protocol.md).

After commit, each device's readings go to its group in one `readings.batch` (a flush's messages in one
pipelined round trip); the fleet group gets one digest per HUB_FLEET_DIGEST_SECONDS; the alert engine's
events go to the `alerts` group and the device's group. The publisher is an after-commit consumer
(ingest/commits.py): when it falls behind, its backlog arrives merged (fewer, larger messages); when it had
to shed readings, the devices' streams are told to catch up from the database (`readings.gap`). Best effort
throughout: dashboards recover from the database, never from the channel layer.
"""

import asyncio
import logging
from typing import Any, cast

from channels.layers import BaseChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from core.epoch import now_ms
from core.logs import ThrottledLog
from core.protocol import (
    ALERTS_GROUP,
    FLEET_GROUP,
    AlertEventMessage,
    AlertEventPayload,
    DeviceDigest,
    FleetDigest,
    ReadingsBatch,
    ReadingsGap,
    WireReading,
    device_group,
    wire_value,
)
from devices.services import DeviceIdentity
from ingest.commits import Committed
from ingest.parsing import Reading

logger = logging.getLogger(__name__)


def readings_to_wire(readings: list[Reading]) -> list[WireReading]:
    # wire_value inlined: this runs for every reading stored (a reading holds a number or a text).
    return [[ts, key, cast(str, text) if value is None else value] for ts, key, value, text in readings]


class Publisher:
    """Publishes committed readings, fleet digests and alert events on this process's channel layer."""

    name = "publisher"

    def __init__(self, layer: BaseChannelLayer | None, *, digest_seconds: float) -> None:
        self._layer = layer
        self._sender = GroupSender(layer) if layer is not None else None
        self._digests = FleetDigester(self, digest_seconds)
        self._failures = ThrottledLog(logger)

    async def consume(self, committed: Committed) -> None:
        """One `readings.batch` per device, and the fleet digest's share (a CommitConsumer)."""
        if self._layer is None:
            return
        self._digests.add(committed)
        at = now_ms()
        await self._send_all(
            [
                (
                    device_group(device.key),
                    ReadingsBatch(type="readings.batch", device=device.key, at=at, readings=readings_to_wire(readings)),
                )
                for device, readings in committed.items()
            ]
        )

    async def shed(self, devices: set[DeviceIdentity]) -> None:
        """Readings of these devices were never published: their streams catch up from the database."""
        if self._layer is not None:
            await self._send_all(
                [(device_group(d.key), ReadingsGap(type="readings.gap", device=d.key)) for d in devices]
            )

    async def alert_event(self, event: AlertEventPayload) -> None:
        """The fleet page follows every alert; a device page follows its device's group."""
        await self._send_all(
            [
                (ALERTS_GROUP, AlertEventMessage(type="alert.event", audience="fleet", event=event)),
                (device_group(event["device"]), AlertEventMessage(type="alert.event", audience="device", event=event)),
            ]
        )

    async def fleet_digest(self, devices: dict[str, DeviceDigest]) -> None:
        await self._send_all([(FLEET_GROUP, FleetDigest(type="fleet.digest", devices=devices))])

    async def _send_all(self, messages: list[tuple[str, Any]]) -> None:
        if self._sender is None or not messages:
            return
        failed, error = await self._sender.send_many(messages)
        if failed:
            self._failures.warning("publishing failed for %d of %d groups: %r", failed, len(messages), error)

    async def close(self) -> None:
        """Publish the pending fleet digest (shutdown)."""
        await self._digests.close()


class GroupSender:
    """Sends many (group, message) pairs at once on one channel layer (this process's publisher owns one).

    On channels-redis' pub/sub layer, one pipelined round trip per Redis shard (`_PubSubPipeline`, chosen on the
    first send: the layer's connections belong to the running event loop); on any other layer, or when the
    pub/sub layer's internals changed (a warning, once), one `group_send` each, concurrently.
    """

    def __init__(self, layer: BaseChannelLayer) -> None:
        self._layer = layer
        self._pipeline: _PubSubPipeline | None = None
        self._chosen = False

    async def send_many(self, messages: list[tuple[str, Any]]) -> tuple[int, BaseException | None]:
        """Send each (group, message); returns how many failed and one of the errors."""
        if not self._chosen:
            self._pipeline, self._chosen = _PubSubPipeline.of(self._layer), True
        if self._pipeline is not None:
            return await self._pipeline.publish(messages)
        results = await asyncio.gather(*(self._layer.group_send(g, m) for g, m in messages), return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        return len(errors), errors[0] if errors else None


class _PubSubPipeline:
    """Publishes many group messages of a `RedisPubSubChannelLayer` in one pipeline per shard.

    channels-redis has no batch API: its `group_send` publishes one message per call under the shard's lock,
    awaiting each reply, so a flush of 100 devices costs 100 round trips in a row (each waiting for a turn
    of the busy event loop too), and the fan-out fell seconds behind the commits at 1-reading frames. This
    uses the layer's internals (channels-redis 4.3), named in the *_INTERNALS tuples and checked per call
    (tests/test_fanout.py fails when they change); without them, `GroupSender` falls back to `group_send` and
    logs a warning once. Same channel names, serializer and lock as `group_send`.
    """

    LOOP_LAYER_INTERNALS = ("_get_group_channel_name", "_get_shard", "_shards")
    SHARD_INTERNALS = ("_lock", "_ensure_redis")

    def __init__(self, layer: RedisPubSubChannelLayer) -> None:
        self._layer = layer
        self._loop_layer = layer._get_layer()  # this event loop's connections

    @classmethod
    def of(cls, layer: BaseChannelLayer) -> "_PubSubPipeline | None":
        if not isinstance(layer, RedisPubSubChannelLayer):
            return None
        try:
            pipeline = cls(layer)
            cls.check(pipeline._loop_layer)
        except (AttributeError, TypeError) as exc:
            logger.warning("fan-out: channels-redis internals changed (%s); one group_send per device", exc)
            return None
        return pipeline

    @classmethod
    def check(cls, loop_layer: object) -> None:
        """Raise AttributeError unless the layer still has the internals this relies on."""
        for name in cls.LOOP_LAYER_INTERNALS:
            getattr(loop_layer, name)
        shard: Any
        for shard in loop_layer._shards:  # type: ignore[attr-defined]
            for name in cls.SHARD_INTERNALS:
                getattr(shard, name)

    async def publish(self, messages: list[tuple[str, Any]]) -> tuple[int, BaseException | None]:
        by_shard: dict[Any, list[tuple[str, bytes]]] = {}
        for group, message in messages:
            channel = self._loop_layer._get_group_channel_name(group)
            shard = self._loop_layer._get_shard(channel)
            by_shard.setdefault(shard, []).append((channel, self._layer.serialize(message)))
        shards = list(by_shard)
        results = await asyncio.gather(*(self._send(s, by_shard[s]) for s in shards), return_exceptions=True)
        failed = [(len(by_shard[s]), r) for s, r in zip(shards, results, strict=True) if isinstance(r, BaseException)]
        return sum(n for n, _ in failed), failed[0][1] if failed else None

    @staticmethod
    async def _send(shard: Any, publishes: list[tuple[str, bytes]]) -> None:
        async with shard._lock:  # as RedisSingleShardConnection.publish: the connection is not swapped meanwhile
            shard._ensure_redis()
            async with shard._redis.pipeline(transaction=False) as pipe:
                for channel, data in publishes:
                    pipe.publish(channel, data)
                await pipe.execute()


class FleetDigester:
    """Coalesces committed readings into at most one `fleet.digest` per `interval` seconds.

    A fleet page follows every device; one message per flush per device would cost each viewer up to 50
    messages a second per device, so the latest values are merged here and published on a timer instead.
    """

    def __init__(self, publisher: Publisher, interval: float) -> None:
        self._publisher = publisher
        self._interval = interval
        self._pending: dict[str, DeviceDigest] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self._last = 0.0

    def add(self, committed: Committed) -> None:
        seen = now_ms()
        for device, readings in committed.items():
            digest = self._pending.setdefault(device.key, DeviceDigest(seen=seen, n=0, latest={}))
            digest["seen"] = seen
            newest: dict[str, Reading] = {}  # this flush's newest per key, before any wire list is built
            numbers = 0
            for r in readings:
                numbers += r.value is not None
                current = newest.get(r.key)
                if current is None or r.ts > current.ts:
                    newest[r.key] = r
            digest["n"] += numbers
            latest = digest["latest"]
            for key, r in newest.items():
                held = latest.get(key)
                if held is None or r.ts > cast(int, held[0]):  # [ts, key, value]: the ts first
                    latest[key] = [r.ts, key, wire_value(r.value, r.text)]
        if self._timer is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._last + self._interval - loop.time())
            self._timer = loop.call_later(delay, self._publish_pending)

    def _publish_pending(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        if self._sending is not None and not self._sending.done():
            # The previous digest is still on its way (a slow layer): merge into the next one instead of
            # queueing sends behind it.
            self._timer = loop.call_later(self._interval, self._publish_pending)
            return
        self._last = loop.time()
        devices, self._pending = self._pending, {}
        if devices:
            self._sending = loop.create_task(self._publisher.fleet_digest(devices), name="hub-fleet-digest")

    async def close(self) -> None:
        """Publish what is pending and wait for the send (shutdown)."""
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sending = None
        self._publish_pending()
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)
