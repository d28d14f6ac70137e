"""Epoch milliseconds, the hub's wire and API time, to and from aware UTC datetimes (the ORM's)."""

import time
from datetime import UTC, datetime

# The last instant a query may name: the parser stores nothing from here on (a ts this large is microseconds), and
# widened to whole buckets it stays far inside what a datetime can hold (year 9999).
MAX_MS = 10**14


def now_ms() -> int:
    """The wall clock in epoch milliseconds, as devices stamp readings."""
    return time.time_ns() // 1_000_000


def epoch_ms(value: datetime) -> int:
    # round, not int(): a float timestamp can land a hair below the millisecond it was stored from
    return round(value.timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso_ms(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, as the CSV export writes it: 2026-01-01T00:00:00.500Z."""
    return from_epoch_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
