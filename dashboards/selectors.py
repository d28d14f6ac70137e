"""Read-side queries for the dashboards."""

from datetime import datetime, timedelta

from django.utils import timezone

from devices.models import Device
from ingest.models import LatestValue, Reading


def fleet_status(*, online_window: timedelta = timedelta(minutes=2)) -> list[dict]:
    """Every device with its online flag and latest values."""
    now = timezone.now()
    latest: dict[int, dict] = {}
    for row in LatestValue.objects.values("device_id", "key", "ts", "value", "text"):
        latest.setdefault(row["device_id"], {})[row["key"]] = row["text"] if row["value"] is None else row["value"]
    return [
        {
            "key": d.key,
            "name": d.name or d.key,
            "last_seen": d.last_seen,
            "online": d.last_seen is not None and now - d.last_seen <= online_window,
            "latest": dict(sorted(latest.get(d.id, {}).items())),
        }
        for d in Device.objects.all()
    ]


def readings_recent(*, device: Device, since: datetime, limit: int = 20_000) -> list[list]:
    """Numeric readings of a device since `since`, oldest first, as [ts_ms, key, value]."""
    rows = Reading.objects.filter(device=device, ts__gte=since).order_by("ts").values_list("ts", "key", "value")[:limit]
    return [[int(ts.timestamp() * 1000), key, value] for ts, key, value in rows]
