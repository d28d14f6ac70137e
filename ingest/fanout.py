"""The one fan-out: after commit, each device's readings go to its channel-layer group in one message."""

import asyncio
import logging
from typing import Literal, TypedDict

from channels.layers import get_channel_layer

from devices.services import DeviceIdentity
from ingest.parsing import Reading

logger = logging.getLogger(__name__)

# [ts_ms, key, value]: value is a number, or a string for text readings.
WireReading = list[int | str | float]


class ReadingsBatch(TypedDict):
    """Channel-layer message carrying one flush's readings of one device."""

    type: Literal["readings.batch"]
    device: str
    readings: list[WireReading]


def device_group(device_key: str) -> str:
    return f"device.{device_key}"


def readings_to_wire(readings: list[Reading]) -> list[WireReading]:
    return [[r.ts, r.key, r.text if r.value is None else r.value] for r in readings]


async def fanout_publish(by_device: dict[DeviceIdentity, list[Reading]]) -> None:
    """Send one `readings.batch` per device; failures are logged, never raised (best effort)."""
    layer = get_channel_layer()
    if layer is None:
        return
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
    failed = [key for key, result in zip(keys, results, strict=True) if isinstance(result, BaseException)]
    if failed:
        logger.warning("fan-out failed for %d of %d devices: %r", len(failed), len(keys), results[0])
