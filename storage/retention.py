"""Retention: drop raw readings past HUB_RAW_RETENTION_DAYS and rollups past their own retention.

Rollups are separate relations, so deleting raw rows never changes them. How rows go is the engine's: batched
DELETEs, or on TimescaleDB whole chunks (storage/timescale.py). One process of a cluster applies it at a time.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.utils import timezone

from storage.engine import RAW, ROLLUPS
from storage.engines import engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Days each relation keeps (0: forever) and how often a hub process checks (docs/history.md)."""

    raw_days: int = 0
    rollup_1m_days: int = 0
    rollup_1h_days: int = 0
    interval_seconds: float = 3600.0

    @property
    def configured(self) -> bool:
        return any(days > 0 for days in self._days().values())

    def _days(self) -> dict[str, int]:
        (raw, _), (minute, _), (hour, _) = RAW, *ROLLUPS
        return {raw: self.raw_days, minute: self.rollup_1m_days, hour: self.rollup_1h_days}

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """Relation -> the instant before which its rows go (relations kept forever are left out)."""
        return {relation: now - timedelta(days=days) for relation, days in self._days().items() if days > 0}


def retention_apply(config: RetentionConfig, *, now: datetime | None = None) -> dict[str, int]:
    """Delete what is past its age; returns rows deleted per relation (TimescaleDB: chunks dropped)."""
    deleted = engine().retention_apply(config.cutoffs(now or timezone.now()))
    if any(deleted.values()):
        logger.info("retention: deleted %s", deleted)
    return deleted


def retention_apply_once_across_processes(config: RetentionConfig) -> dict[str, int] | None:
    """retention_apply under the cluster-wide lock; None when another process holds it."""
    storage = engine()
    if not storage.retention_exclusive():
        return None
    try:
        return retention_apply(config)
    finally:
        storage.retention_release()


async def retention_loop(config: RetentionConfig) -> None:
    """Apply retention every `interval_seconds` (a loop of the hub runtime)."""
    while True:
        await asyncio.sleep(config.interval_seconds)
        try:
            await database_sync_to_async(retention_apply_once_across_processes)(config)
        except Exception:
            logger.exception("retention failed; retrying next interval")
