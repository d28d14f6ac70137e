"""One hub process, assembled in one place: what it is made of, and the order it starts and stops in.

`async with hub_runtime(config) as runtime:` builds, for this process and as its `Role` says,

    storage engine -> writer (its engine's backend) -> after-commit consumers, each on its own queue (publisher,
    alert engine) -> the ingest entry point -> device transports (open sockets) -> dashboard streams
    (broadcaster, catch-up) -> streaming reads -> loops (token re-check, alert rules and silence, webhooks,
    layer watchdog, retention, audit retention)

and stops them in reverse: loops cancelled, the writer drained (whatever was acked is committed), each consumer
given its backlog, the publisher's last fleet digest sent, pools closed. The ASGI lifespan (hub/asgi.py) hands
the runtime to every connection through its scope's lifespan state; `mqtt_bridge` and the tests hand it to
what they drive. docs/architecture.md draws the whole.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured

from accounts.audit import audit_prune_loop
from alerts.engine import AlertEngine
from alerts.silence import silence_loop
from alerts.webhooks import webhook_loop
from control.bus import ControlBus
from control.commands import devices_with_open_commands
from control.deadlines import deadline_loop
from control.threads import db_call
from devices.signals import credentials_changed
from history.admission import HistoryReads, ReadAdmission
from history.selectors import device_keys
from hub.config import HubConfig
from hub.roles import Role
from ingest.commits import CommitQueue
from ingest.ratelimit import RateLimiter
from ingest.service import Ingest
from ingest.writer import Writer
from live.broadcast import Broadcaster
from live.publisher import Publisher
from live.streams import Streams
from live.watchdog import layer_watchdog
from storage.engines import engine
from storage.retention import retention_loop
from transports.revocation import OpenSockets, revocation_loop
from transports.shared import DeviceTransports
from transports.tokens import DeviceTokens

logger = logging.getLogger(__name__)

Loop = Callable[[], Coroutine[Any, Any, None]]


class HubRuntime:
    """Every long-lived part of one hub process. Build it in a running event loop; `hub_runtime()` runs it.

    A part the role does not use is not built (None): a stream process has no writer, an ingest process no
    broadcaster."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.role = role = config.role
        self.storage = engine()
        layer = get_channel_layer()
        self.publisher: Publisher | None = None
        self.alerts: AlertEngine | None = None
        self.consumers: list[CommitQueue] = []
        self.writer: Writer | None = None
        self.ingest: Ingest | None = None
        if role.writes:
            self.publisher = Publisher(layer, digest_seconds=config.streams.fleet_digest_seconds)
            self.alerts = AlertEngine(self.publisher, config.alerts)
            self.consumers = [CommitQueue(c, max_rows=config.consumer_max_rows) for c in (self.publisher, self.alerts)]
            self.writer = Writer(self.storage.writer_backend(), config=config.writer, after_commit=self.consumers)
            self.ingest = Ingest(self.writer, config=config.ingest, keys_of=database_sync_to_async(device_keys))
        self.devices: DeviceTransports | None = None
        if role.serves_devices and self.ingest is not None:
            tokens = DeviceTokens(config.transports.token_recheck_seconds)
            self.devices = DeviceTransports(self.ingest, OpenSockets(), config.transports, tokens)
        self.streams: Streams | None = None
        if role.streams:
            stall_check = config.streams.stall_check_seconds
            broadcaster = Broadcaster(layer, tick_seconds=config.streams.tick_seconds, stall_check_seconds=stall_check)
            self.streams = Streams(broadcaster, config.streams)
        self._layer = layer
        # Word about devices' attributes and commands between the processes (control/bus.py): every role.
        self.control = ControlBus(layer)
        # Device self-provisioning attempts per client address (POST /api/v1/provision, docs/api.md).
        self.provisioning = RateLimiter(config.provision_rate, config.provision_burst)
        # The history endpoints' bounds and admission; their streaming reads (CSV export) take connections of their
        # own, never the writer's.
        reads = config.reads
        admission = ReadAdmission(per_client=reads.per_client, per_process=reads.per_process)
        stream = self.storage.reads(size=config.read_pool_size, timeout=reads.timeout_seconds)
        self.history = HistoryReads(reads, admission, stream)
        self._loops: list[asyncio.Task[None]] = []
        self._event_loop = asyncio.get_running_loop()  # the registry's signal comes from other threads

    def _loop_factories(self) -> dict[str, Loop]:
        config = self.config
        loops: dict[str, Loop] = {}
        if (alerts := self.alerts) is not None:
            loops["hub-alert-rules"] = alerts.rules_loop
            if self.role.maintains:
                loops["hub-alert-silence"] = lambda: silence_loop(alerts)
        if (devices := self.devices) is not None:
            every = config.transports.token_recheck_seconds
            loops["hub-token-recheck"] = lambda: revocation_loop(devices.sockets, every)
        if self.role.maintains:
            loops["hub-alert-webhooks"] = lambda: webhook_loop(config.alerts.webhooks)
            if config.retention.configured:
                loops["hub-retention"] = lambda: retention_loop(config.retention)
            loops["hub-command-deadlines"] = lambda: deadline_loop(self.control)
            if config.audit_retention_days > 0:
                interval = config.retention.interval_seconds
                loops["hub-audit-retention"] = lambda: audit_prune_loop(config.audit_retention_days, interval)
        if (streams := self.streams) is not None:
            loops["hub-layer-watchdog"] = lambda: layer_watchdog(streams.broadcaster, self._layer, config.streams)
        return loops

    async def start(self) -> None:
        """Start every part, in order. A database that is down is retried by the pools, not fatal."""
        await self._storage_checked()
        await self.history.stream.open()
        for queue in self.consumers:
            queue.start()
        if self.writer is not None:
            self.writer.start()
        if self.streams is not None:
            await self.streams.broadcaster.start()
        self.control.start(await self._devices_with_commands())
        if self.devices is not None:
            # A rotated or deleted device's token stops working on the HTTP path at once, here and in the other
            # processes (transports/tokens.py): the registry says so, the bus carries it.
            self.control.listen_all(self._credentials_word)
            credentials_changed.connect(self._credentials_changed, weak=False, dispatch_uid=f"hub-tokens-{id(self)}")
        for name, loop in self._loop_factories().items():
            self._loops.append(asyncio.create_task(loop(), name=name))

    def _credentials_changed(self, *, created: dict[str, str], deleted: list[str], **signal: object) -> None:
        """The registry's signal, in the thread that committed the change."""
        keys = [*created, *deleted]
        if self.devices is not None and keys:
            self.devices.tokens.forget_keys(keys)
            # Rotations and deletions come one device at a time; a bulk import's new devices are in no cache.
            if len(keys) <= 100:
                self._event_loop.call_soon_threadsafe(self._credentials_told, keys)

    def _credentials_told(self, keys: list[str]) -> None:
        for key in keys:
            self._event_loop.create_task(self.control.tell(key, credentials=True))

    def _credentials_word(self, message: dict[str, Any]) -> None:
        if message.get("credentials") and self.devices is not None:
            self.devices.tokens.forget_keys([message["device"]])

    async def _devices_with_commands(self) -> list[str]:
        """Where devices connect (their sockets, long-polls, the bridge): those that may have commands waiting. A
        database that does not answer yet: word fills the set as commands come."""
        if self.ingest is None:
            return []  # a stream process holds no device
        try:
            return await asyncio.wait_for(db_call(devices_with_open_commands)(), 5)
        except Exception as exc:
            logger.warning("could not read the devices with open commands at start-up (%s); carrying on", exc)
            return []

    async def _storage_checked(self) -> None:
        """A database this process must not serve (HUB_TIMESCALE=on without TimescaleDB) fails start-up; one that
        does not answer yet does not (pools retry; /readyz says what is missing)."""
        try:
            await asyncio.wait_for(database_sync_to_async(self.storage.start_checked)(), 5)
        except ImproperlyConfigured:
            raise
        except Exception as exc:
            logger.warning("could not check the database at start-up (%s); carrying on", exc)

    async def stop(self) -> None:
        """Stop in reverse order: the writer drains before its consumers stop, so every ack is published."""
        for task in self._loops:
            task.cancel()
        if self._loops:
            # A loop cancelled inside a database call in a thread (retention's batched DELETEs) ends only when
            # the call returns: the writer's drain does not wait for it.
            await asyncio.wait(self._loops, timeout=1.0)
        self._loops.clear()
        credentials_changed.disconnect(dispatch_uid=f"hub-tokens-{id(self)}")
        await self.control.stop()
        if self.streams is not None:
            await self.streams.broadcaster.close()
            self.streams.close()
        if self.writer is not None:
            await self.writer.drain()
            logger.info("writer drained")
        for queue in self.consumers:
            await queue.close(timeout=self.config.writer.drain_timeout)
        if self.publisher is not None:
            await self.publisher.close()
        await self.history.stream.close()


@contextlib.asynccontextmanager
async def hub_runtime(config: HubConfig | None = None, *, role: Role | None = None) -> AsyncIterator[HubRuntime]:
    """Build and start a runtime (`config`: else read from settings, for `role` if given); stop it on the way out."""
    runtime = HubRuntime(config or HubConfig.from_settings(role=role))
    try:
        await runtime.start()
    except BaseException:
        await runtime.stop()
        raise
    try:
        yield runtime
    finally:
        await runtime.stop()
        logger.info("hub runtime stopped (%s)", runtime.role)
