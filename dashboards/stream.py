"""The dashboard stream's catch-up and stitching, as plain functions (docs/stream-protocol.md)."""

from django.conf import settings

from core.epoch import epoch_ms, from_epoch_ms
from ingest.models import Reading

Identity = tuple[str, int]  # (key, ts)


def readings_since(*, device_id: int, since: int, limit: int | None = None) -> list[list]:
    """Committed numeric readings with ts > since, oldest first, as [ts, key, value] (the wire shape)."""
    limit = limit or settings.HUB_STREAM_CATCHUP_LIMIT
    rows = (
        Reading.objects.filter(device_id=device_id, ts__gt=from_epoch_ms(since))
        .order_by("ts", "key")
        .values_list("ts", "key", "value")[:limit]
    )
    return [[epoch_ms(ts), key, value] for ts, key, value in rows]


def unseen(readings: list[list], seen: set[Identity]) -> list[list]:
    """Live readings not already sent with the history (a reading committed during the catch-up query
    is in the query's result and may also arrive live: it must appear once)."""
    return [r for r in readings if (r[1], r[0]) not in seen]
