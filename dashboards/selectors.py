"""Read-side queries for the dashboards."""

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, OuterRef, Subquery
from django.utils import timezone

from alerts.selectors import alerts_open_by_device
from core.epoch import epoch_ms
from devices.models import Device
from ingest.models import LatestValue, Reading


def fleet_status() -> dict:
    """Every device with its last-seen time, newest value per key, readings in the last minute and the worst
    firing alert: the fleet page's snapshot. A fixed number of queries whatever the fleet's size."""
    now = timezone.now()
    minute_ago = now - timedelta(minutes=1)
    latest: dict[int, dict[str, list]] = {}
    for device_id, key, ts, value, text in LatestValue.objects.values_list("device_id", "key", "ts", "value", "text"):
        latest.setdefault(device_id, {})[key] = [epoch_ms(ts), key, text if value is None else value]
    alerts = alerts_open_by_device()
    per_minute = readings_per_minute(since=minute_ago)
    devices = [
        {
            "key": key,
            "name": name or key,
            "seen": epoch_ms(last_seen) if last_seen else None,
            "latest": dict(sorted(latest.get(device_id, {}).items())),
            "per_minute": per_minute.get(device_id, 0),
            "alert": alerts.get(device_id),
        }
        for device_id, key, name, last_seen in Device.objects.order_by("key").values_list(
            "id", "key", "name", "last_seen"
        )
    ]
    return {"now": epoch_ms(now), "online_window": settings.HUB_ONLINE_WINDOW_SECONDS * 1000, "devices": devices}


def readings_per_minute(*, since: datetime) -> dict[int, int]:
    """device id -> numeric readings with ts >= since: one index range scan per (device, key) seen since then."""
    recent = (
        Reading.objects.filter(device_id=OuterRef("device_id"), key=OuterRef("key"), ts__gte=since)
        .order_by()
        .values("device_id")
        .annotate(n=Count("*"))
        .values("n")
    )
    counts: dict[int, int] = {}
    rows = LatestValue.objects.filter(ts__gte=since, value__isnull=False).annotate(n=Subquery(recent))
    for device_id, n in rows.values_list("device_id", "n"):
        counts[device_id] = counts.get(device_id, 0) + (n or 0)
    return counts


def readings_recent(*, device: Device, since: datetime, keys: Sequence[str] = (), limit: int = 20_000) -> list[list]:
    """The newest `limit` numeric readings of a device (of `keys`, if given) since `since`, oldest first, as
    [ts_ms, key, value]. Newest, not oldest: the page's history must end where the stream's catch-up starts."""
    rows = Reading.objects.filter(device=device, ts__gte=since)
    if keys:
        rows = rows.filter(key__in=keys)
    newest = list(rows.order_by("-ts", "-key").values_list("ts", "key", "value")[:limit])
    return [[epoch_ms(ts), key, value] for ts, key, value in reversed(newest)]
