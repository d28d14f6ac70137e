"""Read side of the device registry."""

from collections.abc import Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet

from core.epoch import epoch_ms
from devices.labels import devices_labelled
from devices.models import Device, ProvisioningProfile

STATUSES = ("online", "offline", "never")  # heard within HUB_ONLINE_WINDOW_SECONDS, heard before, never heard


def device_labels_by_id() -> dict[int, dict[str, str]]:
    """device id -> labels, for every device that has any (the alert engine's label-scoped rules)."""
    return dict(Device.objects.exclude(labels={}).values_list("id", "labels"))


def devices_matching(
    *, now: datetime, text: str = "", labels: Mapping[str, str] | None = None, status: str = ""
) -> QuerySet[Device]:
    """Devices by key, whose key or name contains `text`, carrying every label of `labels`, in `status`."""
    devices = devices_labelled(Device.objects.order_by("key"), labels or {})
    if text:
        devices = devices.filter(Q(key__icontains=text) | Q(name__icontains=text))
    online_since = now - timedelta(seconds=settings.HUB_ONLINE_WINDOW_SECONDS)
    if status == "online":
        devices = devices.filter(last_seen__gte=online_since)
    elif status == "offline":
        devices = devices.filter(last_seen__lt=online_since)
    elif status == "never":
        devices = devices.filter(last_seen__isnull=True)
    return devices


def device_summary(device: Device, *, now: datetime) -> dict:
    """A device as the API shows it (instants in UTC milliseconds); never its token."""
    online_since = now - timedelta(seconds=settings.HUB_ONLINE_WINDOW_SECONDS)
    seen = device.last_seen
    return {
        "key": device.key,
        "name": device.name,
        "labels": device.labels,
        "created": epoch_ms(device.created_at),
        "last_seen": epoch_ms(seen) if seen else None,
        "status": "never" if seen is None else "online" if seen >= online_since else "offline",
    }


def provisioning_profile_summary(profile: ProvisioningProfile) -> dict:
    """A provisioning profile as the API shows it; never its secret."""
    return {
        "key": profile.key,
        "key_pattern": profile.key_pattern,
        "labels": profile.labels,
        "expires": epoch_ms(profile.expires_at) if profile.expires_at else None,
        "max_devices": profile.max_devices,
        "provisioned": profile.provisioned,
        "created": epoch_ms(profile.created_at),
    }
