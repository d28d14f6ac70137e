"""After-commit consumers: each gets every committed flush on its own bounded backlog and its own task.

The writer resolves a flush's acks, then `offer()`s the flush to every consumer's `CommitQueue`, which never
waits. A consumer that falls behind finds its backlog merged (one list per device, readings in commit order)
and takes it in one call; past `max_rows` the oldest backlog is shed, the consumer is told which devices lost
readings, and /metrics counts it. So a slow consumer (an alert engine writing transitions, a publisher facing
a slow Redis) never delays acks or another consumer, and no queue grows with how far behind it is.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

from core import metrics
from core.logs import ThrottledLog
from devices.services import DeviceIdentity
from ingest.parsing import Reading

logger = logging.getLogger(__name__)

Committed = dict[DeviceIdentity, list[Reading]]  # one flush (or a merged backlog), readings in commit order


class CommitConsumer(Protocol):
    name: str  # the `consumer` label of its metrics

    async def consume(self, committed: Committed) -> None:
        """Handle committed readings; an exception is logged and counted, never retried."""

    async def shed(self, devices: set[DeviceIdentity]) -> None:
        """Committed readings of these devices were dropped unseen (the consumer fell `max_rows` behind)."""


class CommitQueue:
    """One consumer's bounded backlog and the task that feeds it."""

    def __init__(self, consumer: CommitConsumer, *, max_rows: int) -> None:
        self.consumer = consumer
        self.max_rows = max_rows
        self._pending: Committed = {}
        self._owned: set[DeviceIdentity] = set()  # lists of _pending built here (the others are shared)
        self._rows = 0
        self._since: float | None = None  # when the oldest pending flush was committed
        self._shed: set[DeviceIdentity] = set()
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        name = consumer.name
        self._backlog = metrics.CONSUMER_BACKLOG_ROWS.labels(name)
        self._merged = metrics.CONSUMER_MERGED.labels(name)
        self._shed_rows = metrics.CONSUMER_SHED_READINGS.labels(name)
        self._lag = metrics.CONSUMER_LAG_SECONDS.labels(name)
        self._failures = metrics.CONSUMER_FAILURES.labels(name)
        self._throttled = ThrottledLog(logger)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"hub-commits-{self.consumer.name}")

    def offer(self, committed: Committed) -> None:
        """Add a committed flush to the backlog (never waits)."""
        rows = sum(len(readings) for readings in committed.values())
        if self._rows and self._rows + rows > self.max_rows:
            self._shed_backlog()
        if self._pending:
            self._merged.inc()
        else:
            self._since = time.monotonic()
        for device, readings in committed.items():
            mine = self._pending.get(device)
            if mine is None:
                self._pending[device] = readings  # shared with the other consumers: never mutated here
            elif device in self._owned:
                mine.extend(readings)
            else:
                self._pending[device] = [*mine, *readings]
                self._owned.add(device)
        self._rows += rows
        self._backlog.set(self._rows)
        self._idle.clear()
        self._arrived.set()

    @property
    def backlog_rows(self) -> int:
        return self._rows

    def _shed_backlog(self) -> None:
        self._shed_rows.inc(self._rows)
        self._shed |= set(self._pending)
        self._throttled.warning(
            "commit consumer %s fell %d readings behind; shed them (%d devices)",
            self.consumer.name,
            self._rows,
            len(self._pending),
        )
        self._take()

    def _take(self) -> Committed:
        committed, self._pending, self._owned, self._rows = self._pending, {}, set(), 0
        self._backlog.set(0)
        return committed

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            if self._shed:
                devices, self._shed = self._shed, set()
                await self._call(partial(self.consumer.shed, devices))
            if self._pending:
                self._lag.observe(time.monotonic() - (self._since or time.monotonic()))
                await self._call(partial(self.consumer.consume, self._take()))
            if not self._pending and not self._shed:
                self._idle.set()

    async def _call(self, handler: Callable[[], Awaitable[None]]) -> None:
        try:
            await handler()
        except Exception:
            self._failures.inc()
            self._throttled.warning("commit consumer %s failed", self.consumer.name, exc_info=True)

    async def close(self, timeout: float) -> None:
        """Let the consumer take what is pending (within `timeout`), then stop its task."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
