"""Broker credentials follow the registry, live: with HUB_MQTT_ADMIN_URL the hub administers a real Mosquitto's
dynamic-security plugin, so a device created, bulk-created, provisioned, rotated or deleted by any path can log in,
or is refused and disconnected, at once; `mqtt_dynsec_sync` repairs what a broker missed."""

import asyncio
import getpass
import io
import logging
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from prometheus_client import REGISTRY

from api.credentials import api_token_create
from bridge import dynsec
from bridge.config import admin_login
from bridge.dynsec import ControlSession, device_role
from devices.models import Device
from devices.services import DeviceSpec, device_delete, device_token_rotate, devices_bulk_create
from tests.api.conftest import token_client
from tests.conftest import ROOT
from tests.inprocess import in_process_client
from tests.mqtt_dynsec_broker import NOT_AUTHORIZED, DynsecBroker, Session, dynsec_plugin, logs_in

pytestmark = pytest.mark.usefixtures("postgres")

ADMIN, ADMIN_PASSWORD = "hub-admin", "admin-pw"
BRIDGE, BRIDGE_PASSWORD = "hub-bridge", "bridge-pw"


def broker_for_tests(tmp_path, settings) -> DynsecBroker:
    """A stopped broker, and the hub's settings pointing at it (the admin; the bridge in HUB_MQTT_URL)."""
    broker = DynsecBroker(tmp_path, dynsec_plugin())
    settings.HUB_MQTT_ADMIN_URL = f"mqtt://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{broker.port}"
    settings.HUB_MQTT_URL = f"mqtt://{BRIDGE}:{BRIDGE_PASSWORD}@127.0.0.1:{broker.port}"
    return broker


def sync(*args: str, **options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("mqtt_dynsec_sync", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def broker(tmp_path, settings, transactional_db) -> Iterator[DynsecBroker]:
    """A broker started from the file `mqtt_dynsec_sync --init` writes (the admin and the bridge, no device yet)."""
    started = broker_for_tests(tmp_path, settings)
    sync(init=started.file)
    yield started.start()
    started.stop()


@pytest.fixture
async def writer(runtime, operator_user) -> AsyncIterator[httpx.AsyncClient]:
    token = await sync_to_async(api_token_create)(user=operator_user, name="writer", scope="write")
    async with token_client(runtime, token) as client:
        yield client


async def session(broker: DynsecBroker, username: str, password: str) -> Session:
    return await asyncio.to_thread(Session, broker.port, username, password)


async def test_devices_created_through_the_api_log_in_at_once(broker, writer):
    """One device, then a bulk import: each logs in with its token on the first try, within a second of the answer."""
    created = await writer.post("/api/v1/devices", json={"key": "api-1"})
    answered = time.monotonic()
    device = await session(broker, "api-1", created.json()["token"])
    assert not device.refused and time.monotonic() - answered < 1.0
    device.close()

    bulk = await writer.post("/api/v1/devices/bulk", json={"devices": [{"key": f"bulk-{i}"} for i in range(20)]})
    answered = time.monotonic()
    for item in bulk.json()["devices"][::5]:
        assert await asyncio.to_thread(logs_in, broker.port, item["key"], item["token"]), item["key"]
    assert time.monotonic() - answered < 1.0
    assert not await asyncio.to_thread(logs_in, broker.port, "bulk-0", created.json()["token"]), "its own token only"


async def test_a_rotated_token_is_disconnected_and_refused_and_the_new_one_works(broker, writer):
    token = (await writer.post("/api/v1/devices", json={"key": "rot-1"})).json()["token"]
    other_token = (await writer.post("/api/v1/devices", json={"key": "rot-2"})).json()["token"]
    old, other = await session(broker, "rot-1", token), await session(broker, "rot-2", other_token)

    rotated = await writer.post("/api/v1/devices/rot-1/token")
    assert rotated.status_code == 200, rotated.text
    assert await asyncio.to_thread(old.disconnected.wait, 1.0), "the old token's connection is closed within 1 s"
    assert not await asyncio.to_thread(logs_in, broker.port, "rot-1", token)
    assert await asyncio.to_thread(logs_in, broker.port, "rot-1", rotated.json()["token"])
    assert not other.disconnected.is_set(), "other devices stay connected"
    for open_session in (old, other):
        open_session.close()


async def test_a_deleted_device_is_disconnected_and_refused(broker, writer):
    token = (await writer.post("/api/v1/devices", json={"key": "del-1"})).json()["token"]
    device = await session(broker, "del-1", token)
    assert (await writer.delete("/api/v1/devices/del-1")).status_code == 204
    assert await asyncio.to_thread(device.disconnected.wait, 1.0)
    assert not await asyncio.to_thread(logs_in, broker.port, "del-1", token)
    device.close()


async def test_a_self_provisioned_device_logs_in(broker, writer, runtime):
    profile = {"key": "field", "key_pattern": "th-*"}
    secret = (await writer.post("/api/v1/provisioning-profiles", json=profile)).json()["secret"]
    async with in_process_client(runtime) as anonymous:
        ask = {"profile": "field", "secret": secret, "device": "th-1"}
        provisioned = await anonymous.post("/api/v1/provision", json=ask)
    assert provisioned.status_code == 201, provisioned.text
    assert await asyncio.to_thread(logs_in, broker.port, "th-1", provisioned.json()["token"])


def test_a_device_publishes_and_subscribes_only_under_its_own_key_and_the_bridge_reads_them_all(broker, make_device):
    alice, bob = make_device("acl-alice"), make_device("acl-bob")
    bridge = Session(broker.port, BRIDGE, BRIDGE_PASSWORD)
    a, b = Session(broker.port, alice.key, alice.token), Session(broker.port, bob.key, bob.token)
    try:
        assert bridge.subscribe("$share/hub/devices/+/telemetry") < 0x80 and bridge.subscribe("devices/+/rpc") < 0x80
        assert a.subscribe("devices/acl-alice/#") < 0x80 and b.subscribe("devices/acl-bob/#") < 0x80
        assert a.subscribe("devices/acl-bob/#") == NOT_AUTHORIZED
        assert a.subscribe("devices/+/errors") == NOT_AUTHORIZED, "not even a wildcard over the others'"
        assert a.publish("devices/acl-bob/telemetry") == NOT_AUTHORIZED
        assert a.publish("devices/acl-alice/telemetry") < 0x80 and b.publish("devices/acl-bob/telemetry") < 0x80
        assert sorted(bridge.wait_received(2)) == ["devices/acl-alice/telemetry", "devices/acl-bob/telemetry"]

        assert bridge.publish("devices/acl-bob/errors") < 0x80 and bridge.publish("devices/acl-alice/errors") < 0x80
        received = a.wait_received(2)  # its own telemetry echoed by its own subscription, then its error
        assert received == ["devices/acl-alice/telemetry", "devices/acl-alice/errors"], "never the other device's"
        assert b.wait_received(2)[-1] == "devices/acl-bob/errors"
    finally:
        for open_session in (a, b, bridge):
            open_session.close()


def unsent() -> float:
    return REGISTRY.get_sample_value("hub_mqtt_credentials_unsent_total") or 0.0


def test_a_broker_that_is_away_fails_no_registry_change_and_is_repaired_afterwards(broker, make_device, caplog):
    """Broker down: creating, rotating and deleting still succeed, each with a warning that names the key and never
    the token. Back up, the broker still has the old state; the sync deletes the deleted device's client and the
    rotated one's (its old token), and names what it cannot create; a file rewritten from the stored hashes
    while the broker is stopped gives every device its current token."""
    kept, rotated, deleted = make_device("away-kept"), make_device("away-rotated"), make_device("away-deleted")
    broker.stop()
    before = unsent()
    with caplog.at_level(logging.WARNING, logger="bridge.dynsec"):
        created = make_device("away-created")
        new_token = device_token_rotate(key=rotated.key)
        device_delete(key=deleted.key)
    assert unsent() - before == 3
    assert all(key in caplog.text for key in ("away-created", "away-rotated", "away-deleted", "mqtt_dynsec_sync"))
    assert not any(token in caplog.text for token in (created.token, new_token, rotated.token, deleted.token))

    broker.start()  # as it was before: it missed all three
    assert logs_in(broker.port, deleted.key, deleted.token) and logs_in(broker.port, rotated.key, rotated.token)
    out, err = sync()
    assert "devices gone from the registry: 1: away-deleted" in out
    assert "not the device's current token: 1: away-rotated" in out
    assert "2 client(s) missing" in err and "away-created, away-rotated" in err
    assert not logs_in(broker.port, deleted.key, deleted.token), "the deleted device is refused"
    assert not logs_in(broker.port, rotated.key, rotated.token), "the old token is refused"
    assert logs_in(broker.port, kept.key, kept.token) and logs_in(broker.port, BRIDGE, BRIDGE_PASSWORD)
    assert "in line with the registry" in sync()[0], "a second run changes nothing"

    broker.stop()
    sync(init=broker.file)
    broker.start()
    for key, token in [(created.key, created.token), (rotated.key, new_token), (kept.key, kept.token)]:
        assert logs_in(broker.port, key, token), key
    assert not logs_in(broker.port, deleted.key, deleted.token)


def test_an_import_too_large_to_send_live_is_left_to_the_file(broker, monkeypatch, caplog):
    """Past LIVE_MAX_DEVICES in one change the broker is not told (it would rewrite its file for every command):
    a warning, and the devices log in once the file is written while the broker is stopped."""
    monkeypatch.setattr(dynsec, "LIVE_MAX_DEVICES", 2)
    before = unsent()
    with caplog.at_level(logging.WARNING, logger="bridge.dynsec"):
        created = devices_bulk_create(specs=[DeviceSpec(f"big-{i}") for i in range(3)])
    assert unsent() - before == 1 and "more than 2 devices at once" in caplog.text
    assert not any(logs_in(broker.port, device.key, token) for device, token in created)
    broker.stop()
    sync(init=broker.file)
    broker.start()
    assert all(logs_in(broker.port, device.key, token) for device, token in created)


def test_the_sync_disconnects_a_device_gone_behind_the_hubs_back_and_fixes_roles(broker, make_device):
    """A device deleted without the service (a database restore) keeps its client until the sync deletes it,
    which closes its connection; a role whose ACLs were changed at the broker gets the hub's back."""
    gone, kept = make_device("gone-1"), make_device("kept-1")
    connected = Session(broker.port, gone.key, gone.token)
    Device.objects.filter(key=gone.key).delete()
    with ControlSession(admin_login()) as admin:
        widened = [{"acltype": "publishClientSend", "topic": "#", "allow": True}]
        assert admin.run([[{"command": "modifyRole", "rolename": device_role(kept.key), "acls": widened}]])
    assert not connected.disconnected.is_set()

    out, _ = sync()
    assert "gone from the registry: 1: gone-1" in out and "role(s) of devices gone: 1: device:gone-1" in out
    assert "Fixed the ACLs of role(s): 1: device:kept-1" in out
    assert connected.disconnected.wait(1.0)
    assert not logs_in(broker.port, gone.key, gone.token)
    device = Session(broker.port, kept.key, kept.token)
    assert device.publish("devices/elsewhere/telemetry") == NOT_AUTHORIZED
    for open_session in (connected, device):
        open_session.close()


def test_the_sync_sets_up_a_broker_initialised_by_mosquitto_ctrl(tmp_path, settings, make_device):
    """`mosquitto_ctrl dynsec init` makes an admin and nothing else: the sync adds the roles and the bridge's
    client; devices registered before have no client until their token is rotated, which creates it live."""
    settings.HUB_MQTT_ADMIN_URL = None
    early = make_device("early-1")
    broker = broker_for_tests(tmp_path, settings)
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(broker.file), ADMIN, ADMIN_PASSWORD], check=True, capture_output=True
    )
    broker.start()
    try:
        out, err = sync()
        assert "Created role(s): 2" in out and "Created client(s): 1: hub-bridge" in out
        assert "1 client(s) missing" in err and "early-1" in err
        assert logs_in(broker.port, BRIDGE, BRIDGE_PASSWORD) and not logs_in(broker.port, early.key, early.token)
        token = device_token_rotate(key=early.key)
        assert logs_in(broker.port, early.key, token)
    finally:
        broker.stop()


def test_init_writes_every_device_with_its_stored_hash_and_keeps_the_clients_it_does_not_manage(
    tmp_path, settings, make_device
):
    settings.HUB_MQTT_ADMIN_URL = None
    devices = [make_device(f"init-{i}") for i in range(3)]
    make_device("legacy-1")
    Device.objects.filter(key="legacy-1").update(broker_hash="")
    broker = broker_for_tests(tmp_path, settings)
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(broker.file), "operator", "op-pw"], check=True, capture_output=True
    )
    out, err = sync(init=broker.file)
    assert "3 device(s)" in out and "kept 1 other client(s): operator" in out
    assert "legacy-1" in err
    assert broker.file.stat().st_mode & 0o777 == 0o600
    broker.start()
    try:
        assert all(logs_in(broker.port, d.key, d.token) for d in devices)
        assert logs_in(broker.port, "operator", "op-pw") and logs_in(broker.port, ADMIN, ADMIN_PASSWORD)
        assert "in line with the registry" in sync()[0] and "legacy-1" in sync()[1]
    finally:
        broker.stop()


AUTH_DIRECTIVES = ("allow_anonymous", "password_file", "acl_file", "plugin", "plugin_opt_config_file")


def directives(path: Path) -> set[str]:
    lines = {line.strip() for line in path.read_text().splitlines()}
    return {line for line in lines if line and not line.startswith("#") and not line.startswith(AUTH_DIRECTIVES)}


def test_the_deployed_config_is_the_files_config_with_the_plugin_and_lets_the_hub_in(
    tmp_path, settings, transactional_db
):
    """deploy/mosquitto/mosquitto-dynsec.conf (docker compose) differs from mosquitto.conf only in how clients log
    in, and, with its listener and paths swapped, starts a broker the admin and the bridge log in to."""
    deployed = ROOT / "deploy" / "mosquitto" / "mosquitto-dynsec.conf"
    assert directives(deployed) == directives(ROOT / "deploy" / "mosquitto" / "mosquitto.conf")
    broker = broker_for_tests(tmp_path, settings)
    config = re.sub(r"^listener .*$", f"listener {broker.port} 127.0.0.1", deployed.read_text(), flags=re.M)
    config = re.sub(r"^persistence_location .*$", f"persistence_location {tmp_path}/", config, flags=re.M)
    config = re.sub(r"^plugin .*$", f"plugin {dynsec_plugin()}", config, flags=re.M)
    config = re.sub(r"^plugin_opt_config_file .*$", f"plugin_opt_config_file {broker.file}", config, flags=re.M)
    broker.config.write_text(f"{config}\nuser {getpass.getuser()}\n")
    sync(init=broker.file)
    broker.start()
    try:
        assert logs_in(broker.port, ADMIN, ADMIN_PASSWORD) and logs_in(broker.port, BRIDGE, BRIDGE_PASSWORD)
        assert not logs_in(broker.port, ADMIN, "wrong")
    finally:
        broker.stop()
