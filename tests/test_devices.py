"""The device registry: tokens are random, stored only as a hash, shown once, rotatable."""

import hashlib
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from devices.models import Device
from devices.services import device_authenticate

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]


def test_createdevice_prints_a_random_token_stored_only_as_its_hash():
    """createdevice prints the token as its last line; the database keeps only its SHA-256."""
    token = run("createdevice", "boiler-1", "--name", "Boiler")
    device = Device.objects.get(key="boiler-1")
    assert device.name == "Boiler"
    assert len(token) >= 32  # 24 random bytes, URL-safe base64
    assert device.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = [str(v) for v in Device.objects.values_list().get(key="boiler-1")]
    assert token not in stored
    assert run("createdevice", "boiler-2") != token


def test_createdevice_refuses_a_bad_or_taken_key():
    """Keys are slugs and unique."""
    run("createdevice", "taken")
    with pytest.raises(CommandError, match="key"):
        run("createdevice", "taken")
    with pytest.raises(CommandError, match="key"):
        run("createdevice", "not a slug!")


async def test_rotated_token_replaces_the_old_one():
    """After rotatetoken the old token no longer authenticates and the new one does."""
    from asgiref.sync import sync_to_async

    old = await sync_to_async(run)("createdevice", "rotor")
    assert (await device_authenticate(token=old)).key == "rotor"
    new = await sync_to_async(run)("rotatetoken", "rotor")
    assert new != old
    assert await device_authenticate(token=old) is None
    assert (await device_authenticate(token=new)).key == "rotor"


def test_rotatetoken_of_unknown_device_fails():
    with pytest.raises(CommandError, match="no device"):
        run("rotatetoken", "ghost")


def test_admin_lists_devices_without_tokens(client):
    """The admin shows devices but never a token or its hash."""
    token = run("createdevice", "listed", "--name", "Listed device")
    device = Device.objects.get(key="listed")
    admin = get_user_model().objects.create_superuser("admin", password="pw")
    client.force_login(admin)
    listing = client.get("/admin/devices/device/").content.decode()
    assert "listed" in listing
    change = client.get(f"/admin/devices/device/{device.pk}/change/").content.decode()
    assert "Listed device" in change
    for page in (listing, change):
        assert token not in page
        assert device.token_hash not in page
