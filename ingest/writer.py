"""The one writer per process: batches readings from every connection, commits, then acks, then fans out.

`submit()` queues a message's readings and returns a future that resolves once they are committed.
The queue is bounded in rows: when the database is slow or down, `submit()` waits (backpressure on the
transport) instead of growing memory. A failed flush is retried with backoff; the batch is idempotent
(first write of a (device, key, ts) wins), so a retry after an uncertain commit stores nothing twice.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from devices.services import DeviceIdentity
from hub import metrics
from ingest.backends import Backend, Batch, LatestRow, Row
from ingest.parsing import Reading

logger = logging.getLogger(__name__)

# Called after each commit with the flush's readings per device, in order: fan-out, then alerts.
AfterCommit = Callable[[dict[DeviceIdentity, list[Reading]]], Awaitable[None]]


class WriterClosed(Exception):
    """The writer is shutting down; the readings were not committed (and must not be acked)."""


@dataclass(slots=True)
class _Pending:
    device: DeviceIdentity
    readings: Sequence[Reading]
    future: asyncio.Future[None]
    queued_at: float
    transport: str


@dataclass(frozen=True, slots=True)
class WriterConfig:
    flush_interval: float = 0.020
    batch_rows: int = 20_000
    max_pending_rows: int = 200_000
    drain_timeout: float = 10.0


class Writer:
    """Batches, stores and publishes readings; one instance per process and event loop."""

    def __init__(self, backend: Backend, *, config: WriterConfig, after_commit: Sequence[AfterCommit]) -> None:
        self._backend = backend
        self._config = config
        self._after_commit = after_commit
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._inflight: list[_Pending] = []
        self._arrived = asyncio.Event()
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._fanout: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()
        self.stats = {"flushes": 0, "rows": 0, "retries": 0}

    def start(self) -> None:
        self._task = self.loop.create_task(self._run(), name="hub-writer")

    async def submit(
        self, device: DeviceIdentity, readings: Sequence[Reading], *, transport: str = "other"
    ) -> asyncio.Future[None]:
        """Queue readings; waits while the queue is full. The future resolves after commit."""
        size = len(readings)
        # A message larger than the whole budget still goes through once the queue is empty.
        while self._queued_rows and self._queued_rows + size > self._config.max_pending_rows:
            self._space.clear()
            await self._space.wait()
        if self._closing:
            raise WriterClosed("the hub is shutting down")
        future: asyncio.Future[None] = self.loop.create_future()
        self._queue.append(_Pending(device, readings, future, time.monotonic(), transport))
        self._queued_rows += size
        metrics.WRITER_QUEUE_ROWS.set(self._queued_rows)
        self._idle.clear()
        self._arrived.set()
        return future

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def _run(self) -> None:
        await self._backend.open()
        while True:
            await self._arrived.wait()
            await self._wait_for_batch()
            taken = self._inflight = self._take()
            if taken:
                await self._store(taken)
                self._queued_rows -= sum(len(p.readings) for p in taken)
                metrics.WRITER_QUEUE_ROWS.set(self._queued_rows)
                self._space.set()
                self._on_committed(taken)
            self._inflight = []
            if not self._queue:
                self._arrived.clear()
                self._idle.set()

    async def _wait_for_batch(self) -> None:
        # Flush when the oldest queued message is flush_interval old or batch_rows are waiting.
        while self._queue and not self._closing and self._queued_rows < self._config.batch_rows:
            remaining = self._queue[0].queued_at + self._config.flush_interval - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.005))

    def _take(self) -> list[_Pending]:
        taken: list[_Pending] = []
        rows = 0
        while self._queue and (not taken or rows + len(self._queue[0].readings) <= self._config.batch_rows):
            pending = self._queue.popleft()
            taken.append(pending)
            rows += len(pending.readings)
        return taken

    async def _store(self, taken: list[_Pending]) -> None:
        batch = _batch_of(taken)
        delay = 0.05
        while True:
            started = time.monotonic()
            try:
                await self._backend.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._backend.is_transient(exc):
                    logger.exception("writer: batch of %d readings refused by the database", len(batch.rows))
                    for pending in taken:
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                    return
                self.stats["retries"] += 1
                metrics.WRITER_RETRIES.inc()
                logger.warning("writer: database unavailable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
                delay = min(delay * 2, 5.0)
            else:
                self.stats["flushes"] += 1
                self.stats["rows"] += len(batch.rows)
                metrics.WRITER_FLUSH_SECONDS.observe(time.monotonic() - started)
                metrics.WRITER_BATCH_ROWS.observe(sum(len(p.readings) for p in taken))
                return

    def _on_committed(self, taken: list[_Pending]) -> None:
        """Commit, then ack, then publish: acks resolve here, fan-out follows on its own task."""
        by_device: dict[DeviceIdentity, list[Reading]] = {}
        stored: dict[str, int] = {}
        now = time.monotonic()
        for pending in taken:
            if not pending.future.done():
                pending.future.set_result(None)
            by_device.setdefault(pending.device, []).extend(pending.readings)
            stored[pending.transport] = stored.get(pending.transport, 0) + len(pending.readings)
            metrics.ack_latency(pending.transport).observe(now - pending.queued_at)
        for transport, count in stored.items():
            metrics.stored(transport).inc(count)
        previous = self._fanout
        self._fanout = self.loop.create_task(self._fan_out(previous, by_device), name="hub-fanout")

    async def _fan_out(
        self, previous: asyncio.Task[None] | None, by_device: dict[DeviceIdentity, list[Reading]]
    ) -> None:
        if previous is not None:
            await asyncio.shield(previous)  # keep per-device order across flushes
        if not by_device:
            return
        for hook in self._after_commit:
            try:
                await hook(by_device)
            except Exception:
                # Best effort: dashboards recover from the database, never from the channel layer.
                logger.warning("after-commit %s failed for %d devices", hook.__name__, len(by_device), exc_info=True)

    async def drain(self) -> None:
        """Stop intake, commit what is queued within the drain timeout, fail the rest, close."""
        self._closing = True
        self._space.set()
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self._config.drain_timeout)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for pending in [*self._inflight, *self._queue]:
            if not pending.future.done():
                pending.future.set_exception(WriterClosed("the hub shut down before commit"))
        self._queue.clear()
        self._inflight = []
        if self._fanout is not None:
            await asyncio.gather(self._fanout, return_exceptions=True)
        await self._backend.close()


def _batch_of(taken: list[_Pending]) -> Batch:
    rows: list[Row] = []
    latest: dict[tuple[int, str], Reading] = {}
    for pending in taken:
        device_id = pending.device.id
        for r in pending.readings:
            if r.value is not None and r.text is None:
                rows.append(Row(device_id, r.key, r.ts, r.value))
            current = latest.get((device_id, r.key))
            if current is None or r.ts > current.ts:  # same ts: the first one wins, as in the readings table
                latest[(device_id, r.key)] = r
    return Batch(
        rows=rows,
        latest=[LatestRow(d, k, r.ts, r.value, r.text) for (d, k), r in latest.items()],
        device_ids=sorted({p.device.id for p in taken}),
        seen_at=datetime.now(UTC),
    )
