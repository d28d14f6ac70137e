"""The one writer per process: batches readings from every connection, commits, acks, then hands them on.

`submit()` queues a message's readings and returns a future that resolves once they are committed.
The queue is bounded in rows: when the database is slow or down, `submit()` waits (backpressure on the
transport) instead of growing memory.

Flushes overlap (up to the backend's `max_in_flight`, one connection each): while one commits, the next
copies its rows in. They still take effect one after the other: a flush's statements start after the
previous flush's statements ran, it commits only after the previous one committed, and its futures
resolve and it goes to the after-commit consumers only after the previous flush's. If a flush fails,
the one behind it rolls back too, and both are retried alone, in order, with backoff; the batch is
idempotent (first write of a (device, key, ts) wins, rollups count only rows inserted), so a retry after
an uncertain commit stores nothing twice.

One device's bad input never fails another's: a batch the database refuses for a value it holds is split
in halves, each stored alone, until the refused message is alone; that message fails with
`unstorable_value` (a permanent answer: error frame, HTTP 422, MQTT rejected) and every other commits.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from core import metrics
from core.collector import collector_tune
from devices.services import DeviceIdentity
from ingest.commits import Committed
from ingest.parsing import ErrorCode, IngestError, Reading
from storage.engine import Backend, Batch, DevicesGone, LatestRow

logger = logging.getLogger(__name__)


class CommitSink(Protocol):
    """Takes each committed flush, in commit order, without waiting (ingest/commits.py: CommitQueue)."""

    def offer(self, committed: Committed) -> None: ...


class WriterClosed(Exception):
    """The writer is shutting down; the readings were not committed (and must not be acked)."""


class DeviceDeleted(Exception):
    """The device was deleted before its readings committed: nothing of them is stored, and its token no longer
    authenticates (HTTP 401, WebSocket 4403, MQTT rejected): a resend would be refused too."""


class PreviousFlushFailed(Exception):
    """The flush before this one did not commit: this one rolls back and is retried after it."""


@dataclass(slots=True)
class _Pending:
    device: DeviceIdentity
    readings: Sequence[Reading]
    future: asyncio.Future[None]
    queued_at: float
    transport: str


@dataclass(eq=False)
class _Flush:
    """One batch on its way through the database, and its place behind the previous flush (a `Turn`)."""

    taken: list[_Pending]
    previous: "_Flush | None"
    wake: asyncio.Event  # the writer's: set when this flush's statements have run (the next batch may go) or it ends
    _applied: asyncio.Event = field(default_factory=asyncio.Event)
    _committed: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    done: asyncio.Event = field(default_factory=asyncio.Event)  # committed, or failed for good

    async def to_apply(self) -> None:
        if self.previous is not None:
            await self.previous._applied.wait()

    def applied(self) -> None:
        self._applied.set()
        self.wake.set()

    @property
    def applying(self) -> bool:
        return not self._applied.is_set()

    async def to_commit(self) -> None:
        if self.previous is not None and not await asyncio.shield(self.previous._committed):
            raise PreviousFlushFailed

    def attempted(self, committed: bool) -> None:
        """The overlapped attempt is over: committed, or rolled back (then it is retried alone)."""
        self.applied()
        if not self._committed.done():
            self._committed.set_result(committed)

    @property
    def rows(self) -> int:
        return sum(len(p.readings) for p in self.taken)


@dataclass(frozen=True, slots=True)
class WriterConfig:
    flush_interval: float = 0.020
    # An idle writer flushes what arrives at once: a lone request waits for one commit, not for flush_interval too.
    # Idle means no flush is running its statements: the next batch is taken as the previous one waits for its
    # COMMIT's WAL flush, so the two overlap (issue 26: HTTP posts waited a whole commit more for their batch);
    # under load the next batch gathers while the previous flush's statements run (group commit).
    flush_when_idle: bool = True
    batch_rows: int = 20_000
    max_pending_rows: int = 200_000
    drain_timeout: float = 10.0


class Writer:
    """Batches, stores and publishes readings; one instance per process and event loop."""

    def __init__(self, backend: Backend, *, config: WriterConfig, after_commit: Sequence[CommitSink] = ()) -> None:
        self._backend = backend
        self._config = config
        self._after_commit = after_commit
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0  # queued or in flight: the bound of max_pending_rows
        self._flushes: dict[_Flush, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max(1, backend.max_in_flight))
        self._last: _Flush | None = None
        self._arrived = asyncio.Event()
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._flush_ended = asyncio.Event()  # set as a flush's statements have run and as it ends (the next may go)
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()
        self.stats = {"flushes": 0, "rows": 0, "retries": 0}

    def start(self) -> None:
        collector_tune()  # the writer's process is the one that ingests
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
            await self._slots.acquire()
            await self._wait_for_batch()
            if not self._queue:
                self._slots.release()
                self._arrived.clear()
                continue
            flush = self._last = _Flush(self._take(), self._last, self._flush_ended)
            self._flushes[flush] = self.loop.create_task(self._flush(flush), name="hub-flush")

    async def _wait_for_batch(self) -> None:
        # Flush when no flush is running its statements (flush_when_idle), the oldest queued message is
        # flush_interval old, or batch_rows are waiting.
        while self._queue and not self._closing and self._queued_rows < self._config.batch_rows:
            if self._config.flush_when_idle and (self._last is None or not self._last.applying):
                return
            remaining = self._queue[0].queued_at + self._config.flush_interval - time.monotonic()
            if remaining <= 0:
                return
            self._flush_ended.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._flush_ended.wait()  # a flush ended: the writer may be idle now

    def _take(self) -> list[_Pending]:
        taken: list[_Pending] = []
        rows = 0
        while self._queue and (not taken or rows + len(self._queue[0].readings) <= self._config.batch_rows):
            pending = self._queue.popleft()
            taken.append(pending)
            rows += len(pending.readings)
        return taken

    async def _flush(self, flush: _Flush) -> None:
        """Store one flush (overlapping the previous one), then, in flush order, ack and publish."""
        try:
            committed = await self._overlapped(flush)
            if flush.previous is not None:
                await flush.previous.done.wait()  # everything before is final: retry alone, ack in order
            if committed is None:
                committed = await self._store(flush.taken)
            self._queued_rows -= flush.rows
            metrics.WRITER_QUEUE_ROWS.set(self._queued_rows)
            self._space.set()
            self._on_committed(committed)
        except asyncio.CancelledError:  # drain ran out of time: whatever is not acked stays unacked
            _fail(flush.taken, WriterClosed("the hub shut down before commit"))
            raise
        finally:
            flush.attempted(False)
            flush.done.set()
            flush.previous = None  # the chain of flushes ends here (memory)
            if self._last is flush:
                self._last = None
            del self._flushes[flush]
            self._flush_ended.set()
            self._slots.release()
            if not self._queue and not self._flushes:
                self._idle.set()

    async def _overlapped(self, flush: _Flush) -> list[_Pending] | None:
        """The first attempt, overlapping the previous flush; None when it did not commit."""
        started = time.monotonic()
        try:
            await self._backend.write(_batch_of(flush.taken), flush)
        except (PreviousFlushFailed, DevicesGone):
            flush.attempted(False)
            return None
        except Exception as exc:
            flush.attempted(False)
            if self._backend.is_transient(exc):
                self._retrying(exc, 0.0)
            else:
                logger.warning("writer: batch of %d readings refused (%s); retrying alone", flush.rows, exc)
            return None
        flush.attempted(True)
        self._flushed(flush.taken, started)
        return flush.taken

    async def _store(self, taken: list[_Pending]) -> list[_Pending]:
        """Commit `taken` alone, retrying transient errors; returns what was committed (the rest failed)."""
        delay = 0.05
        while taken:
            started = time.monotonic()
            try:
                await self._backend.write(_batch_of(taken))
            except asyncio.CancelledError:
                raise
            except DevicesGone as gone:
                # Fail only the deleted devices' readings (their sockets get closed); store the others.
                logger.warning("writer: %s; their readings are refused", gone)
                taken = _fail(taken, DeviceDeleted(str(gone)), gone.device_ids)
            except Exception as exc:
                if self._backend.refuses(exc):
                    return await self._isolate(taken, exc)
                if not self._backend.is_transient(exc):
                    logger.exception("writer: batch of %d readings refused by the database", len(taken))
                    _fail(taken, exc)
                    return []
                self._retrying(exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
                delay = min(delay * 2, 5.0)
            else:
                self._flushed(taken, started)
                return taken
        return taken

    async def _isolate(self, taken: list[_Pending], exc: BaseException) -> list[_Pending]:
        """Bisect a refused batch: store each half alone until the refused message is alone, then fail it."""
        if len(taken) > 1:
            half = len(taken) // 2
            return await self._store(taken[:half]) + await self._store(taken[half:])
        refused = taken[0]
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logger.warning(
            "writer: the database refuses a message of device %s (%s); not stored", refused.device.key, reason
        )
        metrics.MESSAGES_REJECTED.labels(refused.transport, ErrorCode.UNSTORABLE_VALUE).inc()
        _fail(taken, IngestError(ErrorCode.UNSTORABLE_VALUE, f"the database cannot store this message: {reason}"))
        return []

    def _retrying(self, exc: BaseException, delay: float) -> None:
        self.stats["retries"] += 1
        metrics.WRITER_RETRIES.inc()
        logger.warning("writer: database unavailable (%s); retrying in %.2fs", exc, delay)

    def _flushed(self, taken: list[_Pending], started: float) -> None:
        rows = sum(len(p.readings) for p in taken)
        self.stats["flushes"] += 1
        self.stats["rows"] += rows
        metrics.WRITER_FLUSH_SECONDS.observe(time.monotonic() - started)
        metrics.WRITER_BATCH_ROWS.observe(rows)

    def _on_committed(self, taken: list[_Pending]) -> None:
        """Commit, then ack, then publish: acks resolve here, then each consumer's queue gets the flush."""
        by_device: Committed = {}
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
        if by_device:
            for sink in self._after_commit:
                sink.offer(by_device)

    async def drain(self) -> None:
        """Stop intake, commit what is queued within the drain timeout, fail the rest, close (once)."""
        if self._closing:
            return
        self._closing = True
        self._space.set()
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self._config.drain_timeout)
        tasks = [t for t in (self._task, *self._flushes.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(WriterClosed("the hub shut down before commit"))
        self._queue.clear()
        await self._backend.close()


def _fail(taken: list[_Pending], exc: BaseException, device_ids: set[int] | None = None) -> list[_Pending]:
    """Fail the futures of `taken` (only those of `device_ids` when given); returns the others."""
    kept = []
    for pending in taken:
        if device_ids is not None and pending.device.id not in device_ids:
            kept.append(pending)
        elif not pending.future.done():
            pending.future.set_exception(exc)
    return kept


def _batch_of(taken: list[_Pending]) -> Batch:
    rows: list[tuple[int, str, int, float]] = []
    latest: dict[int, dict[str, Reading]] = {}
    for pending in taken:
        device_id = pending.device.id
        readings = pending.readings
        rows += [(device_id, key, ts, value) for ts, key, value, _ in readings if value is not None]
        newest = latest.setdefault(device_id, {})
        for r in readings:
            current = newest.get(r.key)
            if current is None or r.ts > current.ts:  # same ts: the first one wins, as in the readings table
                newest[r.key] = r
    return Batch(
        rows=rows,
        latest=[
            LatestRow(d, k, r.ts, r.value, r.text)
            for d, newest in sorted(latest.items())
            for k, r in sorted(newest.items())
        ],
        device_ids=sorted(latest),
        seen_at=datetime.now(UTC),
    )
