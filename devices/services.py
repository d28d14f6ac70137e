"""Device registry services: create, rotate, authenticate, look up by key."""

from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.db import transaction

from devices.models import Device
from devices.tokens import token_broker_hash, token_hash, token_new


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What a transport needs to know about an authenticated device."""

    id: int
    key: str
    token_hash: str = ""


def device_create(*, key: str, name: str = "") -> tuple[Device, str]:
    """Create a device; returns it with its plaintext token (the only time the token is visible)."""
    token = token_new()
    device = Device(key=key, name=name, token_hash=token_hash(token), broker_hash=token_broker_hash(token))
    device.full_clean()
    device.save()
    return device, token


def device_token_rotate(*, key: str) -> str:
    """Issue a new token for a device; the old one stops working at once."""
    token = token_new()
    with transaction.atomic():
        device = Device.objects.select_for_update().get(key=key)
        device.token_hash = token_hash(token)
        device.broker_hash = token_broker_hash(token)
        device.save(update_fields=["token_hash", "broker_hash"])
    return token


def device_issue_token(*, key: str, name: str = "") -> str:
    """A fresh token for `key`, creating the device if needed (demo and simulated devices: tokens are stored
    hashed, so a simulator that starts again needs new ones)."""
    if Device.objects.filter(key=key).exists():
        return device_token_rotate(key=key)
    return device_create(key=key, name=name)[1]


async def device_authenticate(*, token: str) -> DeviceIdentity | None:
    """The device owning this token, or None."""
    if not token or len(token) > 256:
        return None
    hashed = token_hash(token)
    row = await _device_row(token_hash=hashed)
    return DeviceIdentity(id=row[0], key=row[1], token_hash=hashed) if row else None


async def device_identity_by_key(*, key: str) -> DeviceIdentity | None:
    """The device registered under `key`, or None (MQTT topics name devices by key)."""
    row = await _device_row(key=key)
    return DeviceIdentity(id=row[0], key=row[1]) if row else None


@database_sync_to_async
def _device_row(**lookup: str) -> tuple[int, str] | None:
    # database_sync_to_async drops connections that broke (a database restart) before and after the query,
    # which long-lived sockets and background tasks need: no request cycle does it for them.
    return Device.objects.filter(**lookup).values_list("id", "key").first()
