"""The one fan-out: after commit, each device's readings go to its channel-layer group in one message."""

import asyncio
import logging
import time
from typing import Any, Literal, TypedDict

from channels.layers import BaseChannelLayer, get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

from core.logs import ThrottledLog
from devices.services import DeviceIdentity
from ingest.parsing import Reading

logger = logging.getLogger(__name__)
_failures = ThrottledLog(logger)

# [ts_ms, key, value]: value is a number, or a string for text readings.
WireReading = list[int | str | float]


class ReadingsBatch(TypedDict):
    """Channel-layer message carrying one flush's readings of one device."""

    type: Literal["readings.batch"]
    device: str
    readings: list[WireReading]


class DeviceDigest(TypedDict):
    """What the fleet page needs of one device: when it was last seen and its newest value per key."""

    seen: int  # ms, commit time of its latest flush
    n: int  # numeric readings committed since the previous digest (the fleet page's readings/min)
    latest: dict[str, WireReading]  # key -> [ts_ms, key, value], newest ts wins


class FleetDigest(TypedDict):
    """Channel-layer message to the fleet group: the devices that committed readings since the last one."""

    type: Literal["fleet.digest"]
    devices: dict[str, DeviceDigest]


FLEET_GROUP = "fleet"


def device_group(device_key: str) -> str:
    return f"device.{device_key}"


def readings_to_wire(readings: list[Reading]) -> list[WireReading]:
    return [[r.ts, r.key, r.text if r.value is None else r.value] for r in readings]


async def fanout_publish(by_device: dict[DeviceIdentity, list[Reading]]) -> None:
    """Send one `readings.batch` per device; failures are logged, never raised (best effort)."""
    layer = get_channel_layer()
    if layer is None:
        return
    fleet_digester().add(by_device)
    messages = [
        (
            device_group(device.key),
            ReadingsBatch(type="readings.batch", device=device.key, readings=readings_to_wire(readings)),
        )
        for device, readings in by_device.items()
    ]
    failed, error = await group_send_many(layer, messages)
    if failed:
        _failures.warning("fan-out failed for %d of %d devices: %r", failed, len(messages), error)


async def group_send_many(layer: BaseChannelLayer, messages: list[tuple[str, Any]]) -> tuple[int, BaseException | None]:
    """Send each (group, message); returns how many failed and one of the errors.

    On channels-redis' pub/sub layer, one pipelined round trip per Redis shard (`_PubSubPipeline`); on any
    other layer, one `group_send` each, concurrently.
    """
    pipeline = _PubSubPipeline.of(layer)
    if pipeline is not None:
        return await pipeline.publish(messages)
    results = await asyncio.gather(*(layer.group_send(g, m) for g, m in messages), return_exceptions=True)
    errors = [result for result in results if isinstance(result, BaseException)]
    return len(errors), errors[0] if errors else None


class _PubSubPipeline:
    """Publishes many group messages of a `RedisPubSubChannelLayer` in one pipeline per shard.

    channels-redis has no batch API: its `group_send` publishes one message per call under the shard's lock,
    awaiting each reply, so a flush of 100 devices costs 100 round trips in a row (each waiting for a turn
    of the busy event loop too), and the fan-out fell seconds behind the commits at 1-reading frames. This
    uses the layer's internals (channels-redis 4.3), named in the *_INTERNALS tuples and checked per call
    (tests/test_fanout.py fails when they change); without them, `group_send_many` falls back to
    `group_send` and logs a warning once. Same channel names, serializer and lock as `group_send`.
    """

    LOOP_LAYER_INTERNALS = ("_get_group_channel_name", "_get_shard", "_shards")
    SHARD_INTERNALS = ("_lock", "_ensure_redis")
    _unusable: set[type] = set()

    def __init__(self, layer: RedisPubSubChannelLayer) -> None:
        self._layer = layer
        self._loop_layer = layer._get_layer()  # this event loop's connections

    @classmethod
    def of(cls, layer: BaseChannelLayer) -> "_PubSubPipeline | None":
        if not isinstance(layer, RedisPubSubChannelLayer) or type(layer) in cls._unusable:
            return None
        try:
            pipeline = cls(layer)
            cls.check(pipeline._loop_layer)
        except (AttributeError, TypeError) as exc:
            cls._unusable.add(type(layer))
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
    """Coalesces committed readings into at most one `fleet.digest` per HUB_FLEET_DIGEST_SECONDS.

    A fleet page follows every device; one message per flush per device would cost each viewer up to 50
    messages a second per device, so the latest values are merged here and published on a timer instead.
    """

    def __init__(self, interval: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._interval = interval
        self._pending: dict[str, DeviceDigest] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last = 0.0

    def add(self, by_device: dict[DeviceIdentity, list[Reading]]) -> None:
        seen = time.time_ns() // 1_000_000
        for device, readings in by_device.items():
            digest = self._pending.setdefault(device.key, DeviceDigest(seen=seen, n=0, latest={}))
            digest["seen"] = seen
            latest = digest["latest"]
            for r in readings:
                digest["n"] += r.value is not None
                current = latest.get(r.key)
                if current is None or r.ts > current[0]:
                    latest[r.key] = [r.ts, r.key, r.text if r.value is None else r.value]
        if self._timer is None:
            delay = max(0.0, self._last + self._interval - self.loop.time())
            self._timer = self.loop.call_later(delay, self._publish_pending)

    def _publish_pending(self) -> None:
        self._timer = None
        self._last = self.loop.time()
        devices, self._pending = self._pending, {}
        task = self.loop.create_task(_publish_digest(devices), name="hub-fleet-digest")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Publish what is pending and wait for the sends (shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._publish_pending()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _publish_digest(devices: dict[str, DeviceDigest]) -> None:
    layer = get_channel_layer()
    if not devices or layer is None:
        return
    try:
        await layer.group_send(FLEET_GROUP, FleetDigest(type="fleet.digest", devices=devices))
    except Exception:
        _failures.warning("fleet digest of %d devices not published", len(devices), exc_info=True)


_digester: FleetDigester | None = None


def fleet_digester() -> FleetDigester:
    """This event loop's digester (one per process, like the writer)."""
    global _digester
    if _digester is None or _digester.loop is not asyncio.get_running_loop():
        _digester = FleetDigester(settings.HUB_FLEET_DIGEST_SECONDS)
    return _digester


async def fleet_digester_close() -> None:
    global _digester
    digester, _digester = _digester, None
    if digester is not None and digester.loop is asyncio.get_running_loop():
        await digester.close()
