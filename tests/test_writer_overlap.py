"""Overlapping flushes against real PostgreSQL: two in flight, yet acks, fan-out, first writes and rollups
come out as if the flushes had run one after the other; failures roll the one behind back; no deadlocks."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from devices.services import DeviceIdentity
from ingest.parsing import Reading as R
from ingest.writer import Writer, WriterConfig
from storage.engine import ALONE, Batch, Turn
from storage.engines import POSTGRES
from storage.postgres import PostgresBackend, postgres_conninfo
from tests.engines import refresh_aggregates
from tests.sinks import RecordingSink
from tests.test_writer import waiting_for_a_lock
from tests.waiting import Gate, eventually

pytestmark = [pytest.mark.usefixtures("postgres"), pytest.mark.engines]

T0 = 1_700_000_000_000


async def nothing() -> None:
    return None


@dataclass
class Hooks:
    """What a test does at points of one write: before its statements, after them, before its commit."""

    before_apply: Callable[[], Awaitable[None]] = nothing
    after_apply: Callable[[], None] = lambda: None
    before_commit: Callable[[], Awaitable[None]] = nothing


class HookedTurn:
    """The writer's turn, with the test's hooks around it."""

    def __init__(self, turn: Turn, hooks: Hooks) -> None:
        self._turn, self._hooks = turn, hooks

    async def to_apply(self) -> None:
        await self._hooks.before_apply()
        await self._turn.to_apply()

    def applied(self) -> None:
        self._turn.applied()
        self._hooks.after_apply()

    async def to_commit(self) -> None:
        await self._turn.to_commit()
        await self._hooks.before_commit()


class HookedBackend(PostgresBackend):
    """The real backend; `hooks(n)` gives the n-th write's hooks (counting retries)."""

    def __init__(self, hooks: Callable[[int], Hooks] = lambda n: Hooks(), **options: int) -> None:
        super().__init__(postgres_conninfo(connection.settings_dict), extension=POSTGRES.extension, **options)
        self.hooks = hooks
        self.writes = 0
        self.rows_written = 0  # rows of every write begun, retries included
        self.in_flight = self.most_in_flight = 0
        self.committed: list[int] = []  # first ts of each committed batch, in commit order

    async def write(self, batch: Batch, turn: Turn = ALONE) -> None:
        self.writes += 1
        self.rows_written += len(batch.rows)
        hooks = self.hooks(self.writes)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await super().write(batch, HookedTurn(turn, hooks))
        finally:
            self.in_flight -= 1
        self.committed.append(min(r[2] for r in batch.rows))


def readings(ts0: int, n: int, *, key: str = "t", value: float | None = None) -> list[R]:
    return [R(ts0 + i, key, float(i) if value is None else value) for i in range(n)]


def query(sql: str, *params) -> list[tuple]:
    with psycopg.connect(postgres_conninfo(connection.settings_dict)) as conn:
        return conn.execute(sql, params).fetchall()


def rollups_equal_raw_rows(*device_ids: int) -> None:
    """Both rollup tables hold exactly the aggregates of the devices' stored readings (rollup tables are
    not Django models: other tests' rows stay, so compare these devices only)."""
    refresh_aggregates()
    for table, width in (("ingest_rollup_1m", "1 minute"), ("ingest_rollup_1h", "1 hour")):
        raw = query(
            f"SELECT device_id, key, date_bin(interval '{width}', ts, timestamptz 'epoch') AS b,"  # noqa: S608
            " count(*), sum(value), min(value), max(value) FROM ingest_reading GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        rolled = query(
            f"SELECT device_id, key, bucket, n, sum, min, max FROM {table} WHERE device_id = ANY(%s)"  # noqa: S608
            " ORDER BY 1, 2, 3",
            list(device_ids),
        )
        assert [r[:4] for r in rolled] == [r[:4] for r in raw], table
        for got, want in zip(rolled, raw, strict=True):
            assert got[4:] == pytest.approx(want[4:], rel=1e-12), (table, got, want)


async def second_waits_for_first(backend: HookedBackend) -> None:
    """The second flush is in the database, its statements waiting for a row the first one wrote (and has not
    committed)."""

    async def waiting() -> bool:
        return backend.in_flight == 2 and await waiting_for_a_lock()

    await eventually(waiting, what="the second flush to wait for the first one's rows")


async def writer_with(backend: PostgresBackend, published: list | None = None) -> Writer:
    sink = RecordingSink(lambda committed: {device.key: [r.ts for r in rs] for device, rs in committed.items()})
    if published is not None:
        sink.offered = published
    writer = Writer(backend, config=WriterConfig(flush_interval=0.001, batch_rows=100), after_commit=[sink])
    writer.start()
    return writer


async def test_two_flushes_in_flight_commit_ack_and_publish_in_order(make_device):
    """The second flush copies and runs its statements while the first waits to commit; it commits, acks and
    publishes only after the first, and a reading both carry (same ts) keeps the first flush's value."""
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)
    first_may_commit = Gate()
    backend = HookedBackend(lambda n: Hooks(before_commit=first_may_commit.wait) if n == 1 else Hooks())
    published: list[dict] = []
    writer = await writer_with(backend, published)
    first = await writer.submit(ident, readings(T0, 100, value=1.0))
    await eventually(lambda: first_may_commit.waiting == 1, what="the first flush to wait to commit")
    # The second flush resends the first flush's newest reading with another value, then newer ones.
    second = await writer.submit(ident, [R(T0 + 99, "t", 2.0), *readings(T0 + 100, 99, value=3.0)])
    await second_waits_for_first(backend)
    assert backend.most_in_flight == 2, "both flushes are in the database at once"
    assert not first.done() and not second.done(), "neither is acked before its commit"
    first_may_commit.open()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert backend.committed == [T0, T0 + 99], "commit order is flush order"
    await writer.drain()
    assert [list(p) for p in published] == [[device.key], [device.key]]
    assert published[0][device.key][0] == T0 and published[1][device.key][0] == T0 + 99, "fan-out in flush order"
    assert query("SELECT count(*), sum(value) FROM ingest_reading WHERE device_id = %s", device.id) == [
        (199, 100 * 1.0 + 99 * 3.0)
    ], "the resent reading keeps the first write's value"
    assert query("SELECT value FROM ingest_latestvalue WHERE device_id = %s", device.id) == [(3.0,)]
    rollups_equal_raw_rows(device.id)


async def test_a_failed_flush_takes_the_one_behind_it_back_and_both_are_retried_in_order(make_device):
    """The first flush's commit is lost while the second is in the database: the second rolls back too (it
    may have written a reading the first one had), both are retried alone in flush order, everything is
    stored once and the first flush's write of a reading both carry wins."""
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)

    first_began = asyncio.Event()

    async def began() -> None:
        first_began.set()

    async def lost_commit() -> None:
        await second_waits_for_first(backend)
        raise psycopg.OperationalError("the connection was lost before COMMIT")

    backend = HookedBackend(lambda n: Hooks(before_apply=began, before_commit=lost_commit) if n == 1 else Hooks())
    writer = await writer_with(backend)
    first = await writer.submit(ident, [*readings(T0, 99, value=1.0), R(T0 + 500, "t", 1.0)])
    await asyncio.wait_for(first_began.wait(), 10)  # the first flush is taken: the next submit is another flush
    second = await writer.submit(ident, [*readings(T0 + 100, 99, value=2.0), R(T0 + 500, "t", 2.0)])
    await asyncio.wait_for(asyncio.gather(first, second), 20)
    assert writer.stats["retries"] == 1
    assert backend.writes == 4, "two overlapped attempts, then each alone"
    assert backend.committed == [T0, T0 + 100], "retried in flush order"
    await writer.drain()
    assert query("SELECT count(*) FROM ingest_reading WHERE device_id = %s", device.id) == [(199,)]
    assert query("SELECT value FROM ingest_reading WHERE device_id = %s AND ts = %s", device.id, _ts(T0 + 500)) == [
        (1.0,)
    ], "the first flush's write of the shared reading wins"
    assert query("SELECT value FROM ingest_latestvalue WHERE device_id = %s", device.id) == [(1.0,)]
    rollups_equal_raw_rows(device.id)


@pytest.mark.parametrize("staging", ["inline", "copy"])
async def test_a_commit_that_succeeded_but_was_not_confirmed_is_not_rolled_up_twice(make_device, engine, staging):
    """The database committed but the writer saw an error: the retry stores nothing twice, the rollups count
    every reading once, and the flush behind it is retried in order too; with the rows staged in the statements'
    round trip (small batches) and by COPY (large ones)."""
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)

    class UncertainCommit(HookedBackend):
        async def write(self, batch: Batch, turn: Turn = ALONE) -> None:
            first = self.writes == 0
            await super().write(batch, turn)
            if first:
                raise psycopg.OperationalError("server closed the connection unexpectedly")

    backend = UncertainCommit(inline_rows=10_000 if staging == "inline" else 0)
    writer = await writer_with(backend)
    futures = [await writer.submit(ident, readings(T0 + i * 1000, 60, value=float(i))) for i in range(6)]
    await asyncio.wait_for(asyncio.gather(*futures), 20)
    await writer.drain()
    assert writer.stats["retries"] == 1
    # The retry meets the stored rows and takes the resend path (on TimescaleDB: staged, ON CONFLICT DO NOTHING).
    assert backend.resends >= 1
    assert query("SELECT count(*) FROM ingest_reading WHERE device_id = %s", device.id) == [(360,)]
    await sync_to_async(refresh_aggregates)()
    assert query("SELECT sum(n) FROM ingest_rollup_1h WHERE device_id = %s", device.id) == [(360,)]
    rollups_equal_raw_rows(device.id)


@pytest.mark.parametrize("staging", ["inline", "copy"])
async def test_writers_with_crosswise_devices_and_resends_do_not_deadlock(make_device, staging):
    """Two writers (two hub processes) flush the same devices' keys in opposite orders, resending each
    other's readings, released into the database at the same instant: no deadlock, no retry; with the rows in the
    statements (small batches) and by COPY (large ones, on TimescaleDB straight into the hypertable)."""
    devices = [await sync_to_async(make_device)() for _ in range(6)]
    idents = [DeviceIdentity(d.id, d.key) for d in devices]
    go = Gate()
    inline_rows = 10_000 if staging == "inline" else 0
    backends = [HookedBackend(lambda n: Hooks(before_apply=go.wait), inline_rows=inline_rows) for _ in range(2)]
    writers = [await writer_with(b) for b in backends]
    rounds = 8

    def all_at_go(rows: int) -> bool:
        """Every row submitted so far is in a write, and every write in flight waits for `go`."""
        in_flight = sum(b.in_flight for b in backends)
        return sum(b.rows_written for b in backends) >= rows and go.waiting == in_flight > 0

    for r in range(rounds):
        go.close()
        futures = []
        for w, order in zip(writers, (idents, idents[::-1]), strict=True):
            for ident in order:
                batch = [R(T0 + r, key, float(r)) for key in ("a", "b", "c", "d")]
                futures.append(await w.submit(ident, batch if w is writers[0] else batch[::-1]))
        await eventually(lambda r=r: all_at_go(2 * 6 * 4 * (r + 1)), what="both writers' flushes at `go`")
        go.open()
        await asyncio.wait_for(asyncio.gather(*futures), 20)
    for w in writers:
        await w.drain()
    assert [w.stats["retries"] for w in writers] == [0, 0], "no deadlock was detected and retried"
    assert query("SELECT count(*) FROM ingest_reading WHERE device_id = ANY(%s)", [d.id for d in devices]) == [
        (6 * 4 * rounds,)
    ]
    rollups_equal_raw_rows(*(d.id for d in devices))


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def test_backpressure_counts_rows_in_flight(make_device):
    """Rows of flushes still in the database count against max_pending_rows until they commit."""
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)
    gate = Gate()
    backend = HookedBackend(lambda n: Hooks(before_commit=gate.wait))
    writer = Writer(
        backend,
        config=WriterConfig(flush_interval=0.001, batch_rows=100, max_pending_rows=300),
        after_commit=[],
    )
    writer.start()
    futures = [await writer.submit(ident, readings(T0 + i * 100, 100)) for i in range(3)]
    blocked = asyncio.create_task(writer.submit(ident, readings(T0 + 10_000, 100)))
    # The first flush waits to commit, the second behind it: nothing can commit, and `blocked` has run
    # meanwhile (a submit without backpressure would have returned in its first step).
    await eventually(lambda: gate.waiting == 1 and backend.in_flight == 2, what="two flushes in flight")
    assert not blocked.done(), "two flushes in flight and one queued fill the 300-row budget"
    gate.open()
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    await asyncio.wait_for(await asyncio.wait_for(blocked, 10), 10)
    await writer.drain()


async def test_a_large_batch_goes_in_by_copy_exactly_and_its_resend_stores_nothing_twice(make_device, engine):
    """Batches larger than the inline bound go in by binary COPY (on TimescaleDB straight into the hypertable, the
    timestamps sent as PostgreSQL's own microseconds): every value and millisecond comes back as sent, over many of
    COPY's buffers; sent again whole, the batch takes the resend path and the rollups count each reading once."""
    devices = [await sync_to_async(make_device)() for _ in range(3)]
    extremes = [1e300, -1e300, 5e-324, -0.0, 0.1, 2.0**53, 123456.789]
    sent = {
        d.id: [
            R(T0 + 7 * i + j, key, extremes[i % len(extremes)] + j) for i in range(1_000) for j, key in enumerate("ab")
        ]
        for d in devices
    }
    backend = HookedBackend(inline_rows=0)
    writer = Writer(backend, config=WriterConfig(flush_interval=0.05, batch_rows=20_000), after_commit=[])
    writer.start()
    for _attempt in range(2):
        futures = [await writer.submit(DeviceIdentity(d.id, d.key), sent[d.id]) for d in devices]
        await asyncio.wait_for(asyncio.gather(*futures), 30)
    await writer.drain()
    assert backend.resends >= 1
    for d in devices:
        stored = query(
            "SELECT key, (extract(epoch FROM ts) * 1000)::bigint, value FROM ingest_reading WHERE device_id = %s"
            " ORDER BY key, ts",
            d.id,
        )
        assert stored == sorted((r.key, r.ts, r.value) for r in sent[d.id])
    assert query("SELECT key, value FROM ingest_latestvalue WHERE device_id = %s ORDER BY key", devices[0].id) == [
        ("a", extremes[999 % len(extremes)]),
        ("b", extremes[999 % len(extremes)] + 1),
    ]
    rollups_equal_raw_rows(*(d.id for d in devices))


async def test_the_next_batch_goes_in_while_the_previous_one_waits_for_its_commit(make_device):
    """Group commit without waiting out the flush interval: once a flush's statements have run and it waits for its
    COMMIT, what arrived meanwhile is flushed at once, its statements overlapping that commit (a post waits for about
    one commit, not two)."""
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)
    first_may_commit = Gate()
    backend = HookedBackend(lambda n: Hooks(before_commit=first_may_commit.wait) if n == 1 else Hooks())
    writer = Writer(backend, config=WriterConfig(flush_interval=30.0))  # the interval alone would wait 30 s
    writer.start()
    first = await writer.submit(ident, readings(T0, 10))
    await eventually(lambda: first_may_commit.waiting == 1, what="the first flush to wait for its commit")
    second = await writer.submit(ident, readings(T0 + 10, 10))
    try:
        await eventually(lambda: backend.writes == 2, timeout=5, what="the second batch to be flushed at once")
        assert not first.done() and not second.done(), "neither is acked before its commit"
    finally:
        first_may_commit.open()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert backend.committed == [T0, T0 + 10]
    await writer.drain()
