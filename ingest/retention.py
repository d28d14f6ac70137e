"""Retention: drop raw readings past HUB_RAW_RETENTION_DAYS and rollups past their own retention.

Rollups are separate relations, so deleting raw rows never changes them. Where the readings table is a
TimescaleDB hypertable, whole chunks past the age are dropped (`drop_chunks`), the continuous aggregates'
too. Before raw chunks go, the aggregates are refreshed over them (a bucket never materialised would be
lost), and the drop itself records no invalidation (`timescaledb.skip_cagg_invalidation`): otherwise the
next refresh would recompute those buckets from the rows just dropped, and the rollups would go with them.
"""

import asyncio
import logging
import time
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from core.db import dialect
from core.timescale import reading_is_hypertable

logger = logging.getLogger(__name__)

_BATCH = 50_000
# (relation, time column, setting holding its retention in days; 0 keeps forever)
RETAINED = (
    ("ingest_reading", "ts", "HUB_RAW_RETENTION_DAYS"),
    ("ingest_rollup_1m", "bucket", "HUB_ROLLUP_1M_RETENTION_DAYS"),
    ("ingest_rollup_1h", "bucket", "HUB_ROLLUP_1H_RETENTION_DAYS"),
)
_LOCK_ID = 0x6875_6272  # pg advisory lock: one process applies retention at a time


def _retained() -> list[tuple[str, str, int]]:
    """(relation, time column, days) of what has a retention here: rollups only where they exist."""
    relations = RETAINED if dialect().rollups else RETAINED[:1]
    return [(relation, column, getattr(settings, setting)) for relation, column, setting in relations]


def retention_apply(*, now: datetime | None = None) -> dict[str, int]:
    """Delete what is past its age; returns rows deleted per relation (TimescaleDB: chunks dropped)."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        hypertable = dialect().vendor == "postgresql" and reading_is_hypertable(cursor)
    if hypertable:
        return _drop_chunks(now)
    deleted = {
        relation: _delete_older(relation, column, now - timedelta(days=days))
        for relation, column, days in _retained()
        if days > 0
    }
    if any(deleted.values()):
        logger.info("retention: deleted %s", deleted)
    return deleted


def retention_apply_once_across_processes() -> dict[str, int] | None:
    """retention_apply under a PostgreSQL advisory lock; None when another process holds it."""
    if dialect().embedded:  # one process only
        return retention_apply()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_ID])
        if not cursor.fetchone()[0]:
            return None
        try:
            return retention_apply()
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_ID])


def retention_configured() -> bool:
    return any(getattr(settings, setting) > 0 for _relation, _column, setting in RETAINED)


async def retention_loop() -> None:
    """Apply retention every HUB_RETENTION_INTERVAL_SECONDS (a loop of the hub runtime)."""
    while True:
        await asyncio.sleep(settings.HUB_RETENTION_INTERVAL_SECONDS)
        try:
            await database_sync_to_async(retention_apply_once_across_processes)()
        except Exception:
            logger.exception("retention failed; retrying next interval")


def _delete_older(relation: str, column: str, cutoff: datetime) -> int:
    """Delete in batches so a large backlog never holds one huge transaction."""
    d = dialect()
    sql = d.delete_older(relation, column)
    params = {"cutoff": d.ts(round(cutoff.timestamp() * 1000)), "batch": _BATCH}
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            count = cursor.rowcount
        total += count
        if count < _BATCH:
            return total


_ROLLUPS = ("ingest_rollup_1m", "ingest_rollup_1h")


def _refreshed(rollup: str, until: datetime, attempts: int = 5) -> None:
    """Refresh an aggregate up to `until`, waiting out the refresh policy's job if it is running meanwhile
    (TimescaleDB refuses overlapping refreshes); raises after `attempts`, and the raw chunks stay."""
    for attempt in range(attempts):
        try:
            with connection.cursor() as cursor:  # outside a transaction: Django runs in autocommit here
                cursor.execute("CALL refresh_continuous_aggregate(%s, NULL, %s)", [rollup, until])
            return
        except OperationalError as exc:
            if "concurrent refresh" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(2)


def _drop_chunks(now: datetime) -> dict[str, int]:
    """TimescaleDB: chunks dropped per relation (whole chunks: every row in them is past its age)."""
    dropped: dict[str, int] = {}
    for relation, _column, days in _retained():
        if days <= 0:
            continue
        cutoff = now - timedelta(days=days)
        if relation == "ingest_reading":
            for rollup in _ROLLUPS:
                _refreshed(rollup, cutoff)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL timescaledb.skip_cagg_invalidation = on")
            cursor.execute("SELECT count(*) FROM drop_chunks(%s, older_than => %s)", [relation, cutoff])
            dropped[relation] = cursor.fetchone()[0]
    if any(dropped.values()):
        logger.info("retention: dropped chunks %s", dropped)
    return dropped
