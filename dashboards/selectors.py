"""Read-side queries for the dashboards: compositions of the readings selectors (ingest/selectors.py),
the device registry and open alerts."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from alerts.selectors import alerts_open_by_device
from core.epoch import epoch_ms
from devices.models import Device
from ingest.selectors import latest_wire_by_device, readings_per_minute


def fleet_status() -> dict:
    """Every device with its last-seen time, newest value per key, readings in the last minute and the worst
    firing alert: the fleet page's snapshot. A fixed number of queries whatever the fleet's size."""
    now = timezone.now()
    latest = latest_wire_by_device()
    alerts = alerts_open_by_device()
    per_minute = readings_per_minute(since=now - timedelta(minutes=1))
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
