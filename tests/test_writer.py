"""The writer against real PostgreSQL: acks only after commit, bounded queue, outages survived, drain."""

import asyncio
import gc
import sqlite3
from datetime import UTC, datetime

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from core.collector import GC_THRESHOLDS, collector_tune
from core.epoch import now_ms
from devices.models import Device
from devices.services import DeviceIdentity
from ingest.parsing import ErrorCode, IngestError
from ingest.parsing import Reading as R
from ingest.writer import DeviceDeleted, Writer, WriterClosed, WriterConfig
from storage.engine import ALONE, Batch, DevicesGone, LatestRow, Turn
from storage.engines import POSTGRES
from storage.models import Reading
from storage.postgres import PostgresBackend, postgres_conninfo
from storage.sqlite import SqliteBackend
from tests.sinks import RecordingSink
from tests.tcp_proxy import TcpProxy
from tests.waiting import Gate, eventually

pytestmark = [pytest.mark.usefixtures("postgres"), pytest.mark.engines]


class GatedBackend(PostgresBackend):
    """The real PostgreSQL backend, but each write waits for the test to open the gate."""

    def __init__(self, conninfo: str) -> None:
        super().__init__(conninfo, extension=POSTGRES.extension)
        self.gate = Gate()
        self.writes = 0

    async def write(self, batch: Batch, turn: Turn = ALONE) -> None:
        await self.gate.wait()
        await super().write(batch, turn)
        self.writes += 1


def conninfo(**overrides) -> str:
    return postgres_conninfo({**connection.settings_dict, **overrides})


def readings(n: int, *, start: int | None = None, key: str = "t") -> list[R]:
    t0 = start if start is not None else now_ms() - 100_000
    return [R(t0 + i, key, float(i)) for i in range(n)]


async def waiting_for_a_lock() -> bool:
    """A session of the test database waits for a row lock another transaction holds."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        row = await (await conn.execute(query)).fetchone()
    return row is not None and row[0] > 0


@sync_to_async
def stored(device_id: int) -> int:
    return Reading.objects.filter(device_id=device_id).count()


async def nothing(_by_device) -> None:
    return None


async def test_no_future_resolves_before_commit_and_the_queue_is_bounded(make_device):
    """While the database does not commit, no submit resolves and submit() blocks at the row bound."""
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)
    backend = GatedBackend(conninfo())
    writer = Writer(backend, config=WriterConfig(flush_interval=0.005, max_pending_rows=300), after_commit=[])
    writer.start()
    futures = [await writer.submit(ident, readings(100, start=1_700_000_000_000 + i * 1000)) for i in range(3)]
    blocked = asyncio.create_task(writer.submit(ident, readings(100, start=1_700_000_100_000)))
    # Once the flush waits at the gate nothing can commit; `blocked` has run meanwhile (a submit without
    # backpressure would have returned in its first step).
    await eventually(lambda: backend.gate.waiting > 0, what="the flush to wait at the gate")
    assert not blocked.done(), "a full queue makes submit() wait (backpressure)"
    assert not any(f.done() for f in futures), "nothing is acknowledged before commit"
    assert writer.queued_rows == 300
    backend.gate.open()
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    await asyncio.wait_for(await asyncio.wait_for(blocked, 10), 10)
    assert await stored(device.id) == 400
    await writer.drain()


async def test_a_database_outage_delays_acks_and_loses_nothing(make_device):
    """The connection to PostgreSQL is cut: no acks while it is down; after it returns everything is stored."""
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)
    settings_dict = connection.settings_dict
    proxy = await TcpProxy(settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432)).start()
    writer = Writer(
        POSTGRES.writer_backend(conninfo(HOST="127.0.0.1", PORT=proxy.port)),
        config=WriterConfig(flush_interval=0.005),
        after_commit=[],
    )
    writer.start()
    await asyncio.wait_for(await writer.submit(ident, readings(10, start=1_700_000_000_000)), 10)
    await proxy.cut()
    during = [await writer.submit(ident, readings(50, start=1_700_000_001_000 + i * 100)) for i in range(5)]
    await eventually(lambda: writer.stats["retries"] > 0, what="the writer to meet the outage")
    assert not any(f.done() for f in during), "nothing is acknowledged while the database is unreachable"
    await proxy.restore()
    await asyncio.wait_for(asyncio.gather(*during), 30)
    assert await stored(device.id) == 260
    await writer.drain()
    await proxy.close()


async def test_drain_commits_what_is_queued_and_fails_what_cannot_be(make_device):
    """Shutdown commits queued readings; with the database gone, pending futures fail with WriterClosed."""
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)
    writer = Writer(POSTGRES.writer_backend(conninfo()), config=WriterConfig(flush_interval=0.5), after_commit=[])
    writer.start()
    queued = await writer.submit(ident, readings(25))
    await writer.drain()
    assert queued.done() and queued.exception() is None
    assert await stored(device.id) == 25
    with pytest.raises(WriterClosed):
        await writer.submit(ident, readings(1))

    gated = GatedBackend(conninfo())
    stuck = Writer(gated, config=WriterConfig(flush_interval=0.001, drain_timeout=0.3), after_commit=[])
    stuck.start()
    pending = await stuck.submit(ident, readings(5, start=1_700_000_000_000))
    await stuck.drain()
    with pytest.raises(WriterClosed):
        pending.result()


async def test_fan_out_follows_commit_once_per_device_per_flush(make_device):
    """Each flush publishes one message per device carrying that device's readings, after commit."""
    a, b = [await sync_to_async(make_device)() for _ in range(2)]
    sink = RecordingSink(lambda committed: {device.key: len(rs) for device, rs in committed.items()})
    published = sink.offered
    writer = Writer(POSTGRES.writer_backend(conninfo()), config=WriterConfig(flush_interval=0.05), after_commit=[sink])
    writer.start()
    futures = [
        await writer.submit(DeviceIdentity(a.id, a.key), readings(3)),
        await writer.submit(DeviceIdentity(b.id, b.key), readings(2)),
        await writer.submit(DeviceIdentity(a.id, a.key), readings(4, start=1_700_000_000_000)),
    ]
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    await eventually(lambda: bool(published), what="fan-out")
    assert published == [{a.key: 7, b.key: 2}]
    await writer.drain()


async def test_a_deleted_devices_readings_are_refused_and_the_rest_of_the_flush_is_stored(make_device):
    """A flush naming a device deleted meanwhile stores the other devices' readings and fails only that
    device's futures (no reading of a device that does not exist is ever stored)."""
    kept, gone = [await sync_to_async(make_device)() for _ in range(2)]
    await sync_to_async(Device.objects.filter(id=gone.id).delete)()
    writer = Writer(POSTGRES.writer_backend(conninfo()), config=WriterConfig(flush_interval=0.05), after_commit=[])
    writer.start()
    stored_future = await writer.submit(DeviceIdentity(kept.id, kept.key), readings(5))
    refused_future = await writer.submit(DeviceIdentity(gone.id, gone.key), readings(5))
    await asyncio.wait_for(stored_future, 10)
    with pytest.raises(DeviceDeleted):
        await asyncio.wait_for(refused_future, 10)
    await writer.drain()
    assert await stored(kept.id) == 5
    assert await stored(gone.id) == 0


async def test_a_message_the_database_refuses_fails_alone_and_the_rest_of_its_flush_commits(make_device):
    """One flush: nine devices' good messages and one message whose text PostgreSQL cannot hold (NUL; the
    parser refuses it too, this reaches the writer behind the parser's back). Only that message fails, with
    the permanent `unstorable_value`; the nine commit in the same round; the writer goes on."""
    devices = [await sync_to_async(make_device)() for _ in range(10)]
    backend = GatedBackend(conninfo())
    writer = Writer(backend, config=WriterConfig(flush_interval=0.001), after_commit=[])
    writer.start()
    futures = []
    for i, device in enumerate(devices):
        poison = [R(now_ms() - 1000, "s", None, "a\x00b")] if i == 6 else readings(5)
        futures.append(await writer.submit(DeviceIdentity(device.id, device.key), poison))
    backend.gate.open()  # everything above is queued: one flush
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 20)
    refused = results.pop(6)
    assert isinstance(refused, IngestError) and refused.code == ErrorCode.UNSTORABLE_VALUE, refused
    assert results == [None] * 9
    assert [await stored(d.id) for d in devices] == [5] * 6 + [0] + [5] * 3
    assert backend.writes <= 2 * 4 + 1, "bisected: about 2·log2(10) writes, not one per message"
    await asyncio.wait_for(await writer.submit(DeviceIdentity(devices[6].id, devices[6].key), readings(3)), 10)
    await writer.drain()
    assert await stored(devices[6].id) == 3


async def test_deleting_a_device_around_its_flush_leaves_no_reading_behind(make_device):
    """Django deletes a device's readings, then its row. A flush committing between the two steps has its
    readings deleted with the row; a flush reaching the row after its deletion is refused."""
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)
    writer = Writer(POSTGRES.writer_backend(conninfo()), config=WriterConfig(flush_interval=0.001), after_commit=[])
    writer.start()
    async with await psycopg.AsyncConnection.connect(conninfo()) as deleting:
        # Committed between the cascade's DELETE of readings and the DELETE of the device row.
        await deleting.execute("DELETE FROM ingest_reading WHERE device_id = %s", [device.id])
        await asyncio.wait_for(await writer.submit(ident, readings(5)), 10)
        await deleting.execute("DELETE FROM ingest_latestvalue WHERE device_id = %s", [device.id])
        await deleting.execute("DELETE FROM devices_device WHERE id = %s", [device.id])
        # A flush reaching the row while its deletion is not committed waits for it, then is refused.
        late = await writer.submit(ident, readings(5, start=1_700_000_000_000))
        await eventually(waiting_for_a_lock, what="the flush to wait for the deleting transaction's lock")
        assert not late.done(), "the flush waits for the deleting transaction"
        await deleting.commit()
    with pytest.raises(DeviceDeleted):
        await asyncio.wait_for(late, 10)
    await writer.drain()
    assert await stored(device.id) == 0


async def test_a_started_writer_raises_the_collectors_threshold_and_keeps_a_higher_one():
    """Ingest allocates several objects per reading: generation 0 is collected every 50,000, not 700."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        writer = Writer(POSTGRES.writer_backend(conninfo()), config=WriterConfig(), after_commit=[])
        writer.start()
        assert gc.get_threshold() == GC_THRESHOLDS
        await writer.drain()
        gc.set_threshold(200_000, 10, 10)
        collector_tune()
        assert gc.get_threshold() == (200_000, 10, 10), "a higher threshold set by the operator stays"
    finally:
        gc.set_threshold(*before)


async def test_sqlite_refuses_a_batch_naming_a_deleted_device_whole(tmp_path):
    """The embedded backend rolls back a batch whose device is gone, as PostgreSQL's does."""
    path = str(tmp_path / "hub.sqlite3")
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE devices_device (id INTEGER PRIMARY KEY, last_seen TEXT);
            CREATE TABLE ingest_reading (device_id INT, key TEXT, ts TEXT, value REAL,
                                         PRIMARY KEY (device_id, key, ts));
            CREATE TABLE ingest_latestvalue (device_id INT, key TEXT, ts TEXT, value REAL, text TEXT,
                                             PRIMARY KEY (device_id, key));
            INSERT INTO devices_device (id) VALUES (1);
            """
        )
    backend = SqliteBackend(path)
    await backend.open()

    def batch(*device_ids: int) -> Batch:
        return Batch(
            rows=[(d, "t", 1_700_000_000_000, 1.0) for d in device_ids],
            latest=[LatestRow(d, "t", 1_700_000_000_000, 1.0, None) for d in device_ids],
            device_ids=list(device_ids),
            seen_at=datetime.now(UTC),
        )

    with pytest.raises(DevicesGone) as gone:
        await backend.write(batch(1, 2))
    assert gone.value.device_ids == {2}
    await backend.write(batch(1))
    await backend.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT device_id FROM ingest_reading").fetchall() == [(1,)]
        assert db.execute("SELECT last_seen IS NOT NULL FROM devices_device").fetchall() == [(1,)]
