"""The one ingest entry point every transport calls: parse, rate-limit, then queue for the process's writer."""

import asyncio
from dataclasses import dataclass, field

from core import metrics
from core.epoch import now_ms
from devices.services import DeviceIdentity
from ingest.keylimit import KeyBudget, KeysOf
from ingest.parsing import IngestError, Limits, parse_telemetry
from ingest.ratelimit import RateLimiter
from ingest.writer import Writer


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """What a device may send (docs/payload.md, docs/reliability.md)."""

    limits: Limits = field(default_factory=Limits)
    max_keys_per_device: int = 1000  # distinct keys a device may have; 0: no limit
    device_rate: float = 0.0  # readings/s per device and process; 0: no limit
    device_burst: float = 0.0  # its bucket; 0: two seconds' worth of the rate


class Ingest:
    """What a transport hands a device's message to (one per process, owned by the hub runtime)."""

    def __init__(self, writer: Writer, *, config: IngestConfig, keys_of: KeysOf) -> None:
        self.writer = writer
        self.limits = config.limits
        self._limiter = RateLimiter(config.device_rate, config.device_burst or 2 * config.device_rate)
        self._keys = KeyBudget(config.max_keys_per_device, keys_of)

    async def message(self, *, device: DeviceIdentity, body: bytes | str, transport: str) -> asyncio.Future[None]:
        """Validate one message and queue its readings; the future resolves once they are committed.

        Raises IngestError for a message that breaks the grammar (nothing from it is stored).
        `transport` ("ws", "http", "mqtt") labels the metrics.
        """
        try:
            readings = parse_telemetry(body, now_ms=now_ms(), limits=self.limits)
            new_keys = await self._keys.check(device.id, readings)
            self._limiter.take(device.id, len(readings))
            self._keys.admit(device.id, new_keys)  # counted once nothing refuses the message
        except IngestError as error:
            metrics.MESSAGES_REJECTED.labels(transport, error.code).inc()
            raise
        metrics.received(transport).inc(len(readings))
        return await self.writer.submit(device, readings, transport=transport)

    async def drain(self) -> None:
        """Commit what is queued (within the drain timeout) and stop taking messages."""
        await self.writer.drain()
