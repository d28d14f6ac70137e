"""The one ingest entry point every transport calls: parse, rate-limit, then queue for the process's writer."""

import asyncio

from channels.db import database_sync_to_async
from django.conf import settings

from core import metrics
from core.epoch import now_ms
from devices.services import DeviceIdentity
from ingest.keylimit import KeyBudget
from ingest.parsing import IngestError, Limits, parse_telemetry
from ingest.ratelimit import RateLimiter
from ingest.selectors import device_keys
from ingest.writer import Writer


def ingest_limits() -> Limits:
    return Limits(
        max_bytes=settings.HUB_MAX_MESSAGE_BYTES,
        max_readings=settings.HUB_MAX_READINGS_PER_MESSAGE,
        max_future_ms=settings.HUB_MAX_FUTURE_SECONDS * 1000,
        max_past_ms=settings.HUB_MAX_PAST_DAYS * 86_400_000,
    )


class Ingest:
    """What a transport hands a device's message to (one per process, owned by the hub runtime)."""

    def __init__(self, writer: Writer, *, limits: Limits, limiter: RateLimiter, keys: KeyBudget) -> None:
        self.writer = writer
        self._limits = limits
        self._limiter = limiter
        self._keys = keys

    @classmethod
    def from_settings(cls, writer: Writer) -> "Ingest":
        keys = KeyBudget(settings.HUB_MAX_KEYS_PER_DEVICE, database_sync_to_async(device_keys))
        return cls(writer, limits=ingest_limits(), limiter=RateLimiter.from_settings(), keys=keys)

    async def message(self, *, device: DeviceIdentity, body: bytes | str, transport: str) -> asyncio.Future[None]:
        """Validate one message and queue its readings; the future resolves once they are committed.

        Raises IngestError for a message that breaks the grammar (nothing from it is stored).
        `transport` ("ws", "http", "mqtt") labels the metrics.
        """
        try:
            readings = parse_telemetry(body, now_ms=now_ms(), limits=self._limits)
            await self._keys.admit(device.id, readings)
            self._limiter.take(device.id, len(readings))
        except IngestError as error:
            metrics.MESSAGES_REJECTED.labels(transport, error.code).inc()
            raise
        metrics.received(transport).inc(len(readings))
        return await self.writer.submit(device, readings, transport=transport)

    async def drain(self) -> None:
        """Commit what is queued (within the drain timeout) and stop taking messages."""
        await self.writer.drain()
