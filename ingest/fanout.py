"""The one fan-out: after commit, each device's readings go to its channel-layer group in one message."""

import asyncio
import logging
import time
from typing import Literal, TypedDict

from channels.layers import get_channel_layer
from django.conf import settings

from devices.services import DeviceIdentity
from hub.logs import ThrottledLog
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
    readings_of = {device.key: readings for device, readings in by_device.items()}
    keys = list(readings_of)
    results = await asyncio.gather(
        *(
            layer.group_send(
                device_group(key),
                ReadingsBatch(type="readings.batch", device=key, readings=readings_to_wire(readings_of[key])),
            )
            for key in keys
        ),
        return_exceptions=True,
    )
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:
        _failures.warning("fan-out failed for %d of %d devices: %r", len(errors), len(keys), errors[0])


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
