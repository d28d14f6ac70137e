"""One hub process, assembled in one place: what it is made of, and the order it starts and stops in.

`async with hub_runtime(role=...) as runtime:` builds, for this process,

    dialect -> writer (its backend chosen for the dialect) -> after-commit consumers, each on its own queue
    (publisher, alert engine) -> the ingest entry point -> registries of open device sockets and dashboard
    streams -> loops (token re-check, alert silence, webhooks, layer watchdog, retention)

and stops them in reverse: loops cancelled, the writer drained (whatever was acked is committed), each
consumer given its backlog, the publisher's last fleet digest sent, pools closed. The ASGI lifespan
(hub/asgi.py), `mqtt_bridge` and the tests build the hub only through it; while it runs, consumers and views
find it through core/registry.py. docs/architecture.md draws the whole.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connections
from psycopg_pool import AsyncConnectionPool

from alerts.engine import AlertEngine
from alerts.silence import silence_loop
from alerts.webhooks import webhook_loop
from core.db import dialect, postgres_conninfo
from core.registry import runtime_install, runtime_uninstall
from core.timescale import TimescaleUnavailable, timescale_required
from dashboards.broadcast import Broadcaster
from dashboards.watchdog import layer_watchdog
from ingest.backends import backend_for
from ingest.commits import CommitQueue
from ingest.fanout import Publisher
from ingest.retention import retention_configured, retention_loop
from ingest.revocation import OpenSockets, revocation_loop
from ingest.service import Ingest
from ingest.writer import Writer, WriterConfig

logger = logging.getLogger(__name__)

# all: a `serve` process doing everything (the default); ingest: devices and what follows their commits;
# stream: the dashboards' live streams; bridge: an MQTT bridge worker (ingest and its consumers, no loops).
Role = Literal["all", "ingest", "stream", "bridge"]
INGESTS = ("all", "ingest", "bridge")
STREAMS = ("all", "stream")


def writer_config() -> WriterConfig:
    return WriterConfig(
        flush_interval=settings.HUB_WRITER_FLUSH_MS / 1000,
        batch_rows=settings.HUB_WRITER_BATCH_ROWS,
        max_pending_rows=settings.HUB_WRITER_MAX_PENDING_ROWS,
        drain_timeout=settings.HUB_WRITER_DRAIN_SECONDS,
    )


class HubRuntime:
    """Every long-lived part of one hub process. Build it in a running event loop; `hub_runtime()` runs it."""

    def __init__(self, *, role: Role = "all") -> None:
        self.role = role
        self.dialect = dialect()
        self.publisher = Publisher.from_settings()
        self.alerts = AlertEngine(self.publisher)
        self.consumers = [
            CommitQueue(consumer, max_rows=settings.HUB_CONSUMER_MAX_ROWS) for consumer in (self.publisher, self.alerts)
        ]
        self.writer = Writer(backend_for(self.dialect), config=writer_config(), after_commit=self.consumers)
        self.ingest = Ingest.from_settings(self.writer)
        self.sockets = OpenSockets()
        self.broadcaster = Broadcaster.from_settings()
        # Reads that stream (CSV export) take a connection of their own pool, never the writer's.
        self.reads: AsyncConnectionPool | None = None
        if self.dialect.vendor == "postgresql":
            conninfo = postgres_conninfo(connections["default"].settings_dict)
            self.reads = AsyncConnectionPool(conninfo, min_size=0, max_size=settings.HUB_READ_POOL_SIZE, open=False)
        self._loops: list[asyncio.Task[None]] = []

    def _loop_factories(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
        if self.role in INGESTS:
            loops["hub-alert-rules"] = self.alerts.rules_loop
        if self.role in ("all", "ingest"):
            loops["hub-token-recheck"] = lambda: revocation_loop(self.sockets)
            loops["hub-alert-silence"] = lambda: silence_loop(self.alerts)
            loops["hub-alert-webhooks"] = webhook_loop
            if retention_configured():
                loops["hub-retention"] = retention_loop
        if self.role in STREAMS:
            loops["hub-layer-watchdog"] = lambda: layer_watchdog(self.broadcaster)
        return loops

    async def start(self) -> None:
        """Start every part, in order. A database that is down is retried by the pools, not fatal."""
        await _storage_checked()
        if self.reads is not None:
            await self.reads.open(wait=False)
        if self.role in INGESTS:  # the other roles build the ingest parts but never start them
            for queue in self.consumers:
                queue.start()
            self.writer.start()
        if self.role in STREAMS:
            await self.broadcaster.start()
        for name, loop in self._loop_factories().items():
            self._loops.append(asyncio.create_task(loop(), name=name))

    async def stop(self) -> None:
        """Stop in reverse order: the writer drains before its consumers stop, so every ack is published."""
        for task in self._loops:
            task.cancel()
        if self._loops:
            # A loop cancelled inside a database call in a thread (retention's batched DELETEs) ends only when
            # the call returns: the writer's drain does not wait for it.
            await asyncio.wait(self._loops, timeout=1.0)
        self._loops.clear()
        await self.broadcaster.close()
        await self.writer.drain()
        logger.info("writer drained")
        for queue in self.consumers:
            await queue.close(timeout=settings.HUB_WRITER_DRAIN_SECONDS)
        await self.publisher.close()
        if self.reads is not None:
            await self.reads.close()


async def _storage_checked() -> None:
    """HUB_TIMESCALE=on refuses a database without TimescaleDB; one that does not answer yet is not refused
    (pools retry; /readyz says what is missing)."""
    try:
        await asyncio.wait_for(database_sync_to_async(timescale_required)(), 5)
    except TimescaleUnavailable:
        raise
    except Exception as exc:
        logger.warning("could not check the database's TimescaleDB at start-up (%s); carrying on", exc)


@contextlib.asynccontextmanager
async def hub_runtime(*, role: Role = "all") -> AsyncIterator[HubRuntime]:
    """Build, start and install this process's runtime; stop it on the way out."""
    runtime = HubRuntime(role=role)
    try:
        await runtime.start()
    except BaseException:
        await runtime.stop()
        raise
    runtime_install(runtime)
    try:
        yield runtime
    finally:
        runtime_uninstall(runtime)
        await runtime.stop()
        logger.info("hub runtime stopped (%s)", role)
