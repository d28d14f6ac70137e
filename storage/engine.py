"""The one interface of storage: what the writer, the read side and maintenance need of a database engine.

Every line of engine-specific SQL and DDL is in one module per engine behind it: storage/postgres.py,
storage/timescale.py (an extension of PostgreSQL that takes over rollups, retention and compression where the
readings table is a hypertable) and storage/sqlite.py (the embedded default). storage/engines.py picks the
engine of the default database once per call, from Django's connection; nothing outside storage asks which
database it runs on. Queries use named parameters (`%(name)s`), which Django passes to both drivers.
"""

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from django.db import connection, transaction


class Row(NamedTuple):
    """A numeric reading bound to its device, ready to store (a plain tuple in this order will do)."""

    device_id: int
    key: str
    ts: int
    value: float


class LatestRow(NamedTuple):
    device_id: int
    key: str
    ts: int
    value: float | None
    text: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    """One transaction's worth: numeric rows, the newest reading per (device, key), the devices seen."""

    rows: Sequence[tuple[int, str, int, float]]
    latest: Sequence[LatestRow]  # sorted by (device_id, key): every writer locks these rows in one order
    device_ids: Sequence[int]  # sorted, for the same reason
    seen_at: datetime


class ReadTimedOut(Exception):
    """A read's statement ran past its time (Engine.bounded) and was stopped."""


class DevicesGone(Exception):
    """Some devices of the batch were deleted; nothing of the batch was stored."""

    def __init__(self, device_ids: set[int]) -> None:
        super().__init__(f"devices deleted meanwhile: {sorted(device_ids)}")
        self.device_ids = device_ids


class Turn(Protocol):
    """A write's place among overlapping writes (the writer's flushes)."""

    async def to_apply(self) -> None:
        """Returns once the previous write's statements have run."""

    def applied(self) -> None:
        """This write's statements have run, or never will: the next write may run its own."""

    async def to_commit(self) -> None:
        """Returns once the previous write has committed; raises (and this write rolls back) if it did not."""


class _Alone:
    """The turn of a write that overlaps nothing it must be ordered after."""

    async def to_apply(self) -> None:
        return None

    def applied(self) -> None:
        return None

    async def to_commit(self) -> None:
        return None


ALONE: Turn = _Alone()


class Backend(Protocol):
    """The writer's connection to the database: one transaction per batch, overlapping up to `max_in_flight`.

    A batch stores readings (first write of a (device, key, ts) wins), the latest value per (device, key) (newest
    ts wins; same ts: first write wins) and each device's last_seen; naming a device that no longer exists, it is
    rolled back whole and raises DevicesGone. Overlapping writes take effect in `Turn` order."""

    max_in_flight: int

    async def open(self) -> None: ...
    async def write(self, batch: Batch, turn: Turn = ALONE) -> None: ...
    async def close(self) -> None: ...

    def is_transient(self, exc: BaseException) -> bool:
        """Connection loss, deadlocks, pool timeouts: the same batch may be retried."""
        ...

    def refuses(self, exc: BaseException) -> bool:
        """The database refused a value of the batch (its content), not the batch for its own state."""
        ...


class RawRange(Protocol):
    """One key's raw readings in [start, end), at most `limit`, oldest or newest first (a CSV export).
    Read-only, so a frozen query (history.selectors.HistoryQuery) is one."""

    @property
    def device_id(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def limit(self) -> int: ...
    @property
    def newest_first(self) -> bool: ...


class Reads(Protocol):
    """Reads that stream (CSV export), on connections of their own: never the writer's, never Django's."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    def csv_raw(self, query: RawRange, key: str) -> AsyncIterator[bytes]:
        """CSV lines `ts,time,key,value` of one key's raw readings, streamed (never all in memory)."""
        ...


# (relation, time column) of what retention applies to; the rollups only where the engine keeps them.
RAW = ("ingest_reading", "ts")
ROLLUPS = (("ingest_rollup_1m", "bucket"), ("ingest_rollup_1h", "bucket"))


class Engine(Protocol):
    """One database engine: SQL fragments for the read side, the writer's backend, streaming reads, maintenance."""

    vendor: str
    embedded: bool  # the no-server default (SQLite): dev-only conveniences are allowed
    rollups: bool  # minute and hour rollup relations exist
    skip_locked: bool  # SELECT … FOR UPDATE SKIP LOCKED

    def ts(self, ms: int) -> object:
        """The query parameter for a ts column at epoch milliseconds `ms`."""
        ...

    def epoch_ms(self, column: str) -> str:
        """SQL: the epoch milliseconds of a timestamp column."""
        ...

    def bucket_ms(self, column: str) -> str:
        """SQL: the start, in epoch ms, of the epoch-aligned bucket of %(interval)s ms holding `column`."""
        ...

    def any_of(self, param: str) -> str:
        """SQL after a column: it equals one of the values passed as parameter `param` (see `array`)."""
        ...

    def exact(self, column: str) -> str:
        """SQL: a double column in a type whose sums and averages cannot overflow (slower: the fallback)."""
        ...

    def array(self, values: Sequence[object]) -> object:
        """The parameter value `any_of` expects."""
        ...

    # JSON built by the database: an answer of 100,000 points encoded in Python held the GIL (and so the event loop
    # that acknowledges devices) for tens of milliseconds at a time; the database builds the text instead.

    def json_object(self, fields: Sequence[tuple[str, str]]) -> str:
        """SQL: a JSON object of (name, SQL expression) pairs."""
        ...

    def json_array(self, items: Sequence[str]) -> str:
        """SQL: a JSON array of SQL expressions."""
        ...

    def json_agg(self, element: str, order: str) -> str:
        """SQL aggregate: the JSON text of an array of `element` (a json_object or json_array) over the group's
        rows, ordered by `order` (a subquery's order where the engine keeps it); `[]` for no rows."""
        ...

    def finite(self, expression: str) -> str:
        """SQL: the expression as a double, or NULL where it is beyond one (a sum of the exact fallback)."""
        ...

    async def ping(self, timeout: float) -> None:
        """Raise unless the database answers a query within `timeout` seconds."""
        ...

    def writer_backend(self) -> Backend:
        """A new backend for this process's writer, on the default database."""
        ...

    def reads(self, *, size: int, timeout: float) -> Reads:
        """Streaming reads on at most `size` connections of their own, each statement bounded by `timeout` s."""
        ...

    def bounded(self, timeout: float) -> AbstractContextManager[None]:
        """Django's statements inside stop after `timeout` seconds (ReadTimedOut); one transaction."""
        ...

    def retention_apply(self, cutoffs: dict[str, datetime]) -> dict[str, int]:
        """Delete what is older than its relation's cutoff; returns rows (or chunks) deleted per relation."""
        ...

    def retention_exclusive(self) -> bool:
        """Take the cluster-wide retention lock without waiting; False when another process holds it."""
        ...

    def retention_release(self) -> None: ...

    def migrated(self, using: str = "default") -> None:
        """After every `migrate` of database `using`: what the settings configure (TimescaleDB's jobs) follows them."""
        ...

    def start_checked(self) -> None:
        """Raise (ImproperlyConfigured) when this database must not be served as it is (HUB_TIMESCALE=on)."""
        ...


def delete_in_batches(sql: str, params: Mapping[str, datetime | float | str], batch: int) -> int:
    """Run a DELETE of at most `batch` rows until it deletes fewer: a backlog never holds one huge transaction."""
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, {**params, "batch": batch})
            count: int = cursor.rowcount
        total += count
        if count < batch:
            return total
