"""Read side of the device registry."""

from devices.models import Device


def device_labels_by_id() -> dict[int, dict[str, str]]:
    """device id -> labels, for every device that has any (the alert engine's label-scoped rules)."""
    return dict(Device.objects.exclude(labels={}).values_list("id", "labels"))
