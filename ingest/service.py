"""The one ingest entry point every transport calls: parse, then queue for the process's writer."""

import asyncio
import time
from functools import cache

from django.conf import settings

from alerts.engine import alerts_on_committed
from core import metrics
from devices.services import DeviceIdentity
from ingest.backends import backend_from_settings
from ingest.fanout import fanout_publish, fleet_digester_close
from ingest.parsing import IngestError, Limits, parse_telemetry
from ingest.ratelimit import rate_limiter
from ingest.writer import Writer, WriterConfig

_writer: Writer | None = None


@cache
def ingest_limits() -> Limits:
    return Limits(
        max_bytes=settings.HUB_MAX_MESSAGE_BYTES,
        max_readings=settings.HUB_MAX_READINGS_PER_MESSAGE,
        max_future_ms=settings.HUB_MAX_FUTURE_SECONDS * 1000,
        max_past_ms=settings.HUB_MAX_PAST_DAYS * 86_400_000,
    )


def get_writer() -> Writer:
    """The writer of this process, started on first use in the running event loop."""
    global _writer
    if _writer is None or _writer.loop is not asyncio.get_running_loop():
        config = WriterConfig(
            flush_interval=settings.HUB_WRITER_FLUSH_MS / 1000,
            batch_rows=settings.HUB_WRITER_BATCH_ROWS,
            max_pending_rows=settings.HUB_WRITER_MAX_PENDING_ROWS,
            drain_timeout=settings.HUB_WRITER_DRAIN_SECONDS,
        )
        _writer = Writer(backend_from_settings(), config=config, after_commit=[fanout_publish, alerts_on_committed])
        _writer.start()
    return _writer


async def writer_shutdown() -> None:
    """Drain and close the writer (ASGI lifespan shutdown, test teardown)."""
    global _writer
    writer, _writer = _writer, None
    if writer is not None and writer.loop is asyncio.get_running_loop():
        await writer.drain()
    await fleet_digester_close()


async def ingest_message(
    *, device: DeviceIdentity, body: bytes | str, transport: str = "other"
) -> asyncio.Future[None]:
    """Validate one message and queue its readings; the future resolves once they are committed.

    Raises IngestError for a message that breaks the grammar (nothing from it is stored).
    `transport` ("ws", "http", "mqtt") labels the metrics.
    """
    try:
        readings = parse_telemetry(body, now_ms=time.time_ns() // 1_000_000, limits=ingest_limits())
        rate_limiter().take(device.id, len(readings))
    except IngestError as error:
        metrics.MESSAGES_REJECTED.labels(transport, error.code).inc()
        raise
    metrics.received(transport).inc(len(readings))
    return await get_writer().submit(device, readings, transport=transport)
