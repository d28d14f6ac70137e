"""Broker authentication from the registry: `mqtt_auth_files` writes Mosquitto's password and ACL files;
a real Mosquitto started with them lets device KEY in with its token and only under devices/KEY/."""

import base64
import os
import pwd
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from django.core.management import CommandError, call_command
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devices.models import Device
from devices.services import device_token_rotate
from devices.tokens import token_broker_hash
from tests.mqtt_broker import MosquittoBroker

pytestmark = pytest.mark.usefixtures("postgres")

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
BRIDGE_PASSWORD_ENV = "TEST_BRIDGE_PASSWORD"
BRIDGE_USER, BRIDGE_PASSWORD = "hub-bridge", "bridge-pw"

CONFIG = """\
listener {port} 127.0.0.1
# Mosquitto started as root drops to the `mosquitto` user, which cannot read the test's private tmp dir.
user {user}
allow_anonymous false
password_file {auth}/passwd
acl_file {auth}/acl
set_tcp_nodelay true
"""

NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87, in CONNACK and PUBACK


@pytest.fixture
def auth_broker(tmp_path: Path):
    """A private Mosquitto reading the files `mqtt_auth_files` writes into tmp_path/auth."""
    auth = tmp_path / "auth"
    broker = MosquittoBroker(tmp_path)
    user = pwd.getpwuid(os.getuid()).pw_name
    broker.config.write_text(CONFIG.format(port=broker.port, user=user, auth=auth))
    yield broker, auth
    broker.stop()


def write_auth_files(out: Path, monkeypatch) -> None:
    monkeypatch.setenv(BRIDGE_PASSWORD_ENV, BRIDGE_PASSWORD)
    call_command("mqtt_auth_files", out=out, bridge_user=BRIDGE_USER, bridge_password_env=BRIDGE_PASSWORD_ENV)


class Session:
    """A paho MQTT 5 client that records the reason codes the broker answers with."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.connack: ReasonCode | None = None
        self.pubacks: dict[int, ReasonCode] = {}
        self.received: list[str] = []
        self.disconnected = threading.Event()
        self._event = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._event:
            self.connack = reason_code
            self._event.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._event:
            self.pubacks[mid] = reason_code
            self._event.notify_all()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        with self._event:
            self.received.append(message.topic)
            self._event.notify_all()

    def wait_received(self, count: int) -> None:
        self._wait(lambda: len(self.received) >= count, f"{count} messages")

    def _wait(self, condition, what: str) -> None:
        with self._event:
            assert self._event.wait_for(condition, timeout=5), f"no {what} from the broker"

    @property
    def refused(self) -> bool:
        return self.connack is not None and self.connack.is_failure

    def publish(self, topic: str) -> ReasonCode:
        """QoS 1; the PUBACK's reason code (below 0x80: accepted, e.g. 0x10 "no matching subscribers")."""
        mid = self.client.publish(topic, b'{"x": 1}', qos=1).mid
        self._wait(lambda: mid in self.pubacks, f"PUBACK for {topic}")
        return self.pubacks[mid]

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5), f"no SUBACK for {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_broker_hash_is_the_one_mosquitto_passwd_writes(tmp_path):
    """For the same salt, token_broker_hash gives mosquitto_passwd's own `$7$` line."""
    if not Path(MOSQUITTO_PASSWD).exists():
        pytest.skip("mosquitto_passwd is not installed")
    passwd = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(passwd), "someone", "a-token"], check=True)
    user, hashed = passwd.read_text().strip().split(":", 1)
    salt = base64.b64decode(hashed.split("$")[3])
    assert token_broker_hash("a-token", salt=salt) == hashed


def test_devices_log_in_with_their_token_and_publish_only_under_their_key(make_device, auth_broker, monkeypatch):
    """Device KEY logs in as KEY with its token, publishes under devices/KEY/ and nowhere else, and reads only
    its own error topic; the bridge user reads all telemetry through a shared subscription."""
    broker, auth = auth_broker
    alice, bob = make_device("auth-alice"), make_device("auth-bob")
    write_auth_files(auth, monkeypatch)
    broker.start()

    bridge = Session(broker.port, BRIDGE_USER, BRIDGE_PASSWORD)
    bridge.subscribe("$share/hub/devices/+/telemetry")
    device = Session(broker.port, alice.key, alice.token)
    device.subscribe("devices/+/errors")
    device.subscribe("devices/+/rpc/request/+")
    try:
        assert not bridge.refused and not device.refused
        assert not device.publish(f"devices/{alice.key}/telemetry").is_failure
        assert device.publish(f"devices/{bob.key}/telemetry") == NOT_AUTHORIZED
        assert device.publish(f"devices/{bob.key}/rpc/response/1") == NOT_AUTHORIZED
        assert not bridge.publish(f"devices/{bob.key}/errors").is_failure
        assert not bridge.publish(f"devices/{alice.key}/errors").is_failure
        assert not bridge.publish(f"devices/{bob.key}/rpc/request/7").is_failure
        assert not bridge.publish(f"devices/{alice.key}/rpc/request/8").is_failure
        assert Session(broker.port, alice.key, bob.token).refused, "another device's token is refused"
        assert Session(broker.port, "nobody", alice.token).refused
        device.publish(f"devices/{alice.key}/telemetry")  # its PUBACK follows the error messages on the socket
        assert device.received == [f"devices/{alice.key}/errors", f"devices/{alice.key}/rpc/request/8"], (
            "a device reads only its own topics"
        )
        bridge.wait_received(2)
        assert bridge.received == [f"devices/{alice.key}/telemetry"] * 2
    finally:
        device.close()
        bridge.close()


def test_a_rotated_token_stops_working_when_the_files_are_rewritten_and_the_broker_reloads(
    make_device, auth_broker, monkeypatch
):
    """Rotate, rewrite, SIGHUP: the old token's live connection is dropped and refused; the new token works;
    other devices and the bridge stay connected."""
    broker, auth = auth_broker
    alice, bob = make_device("rot-alice"), make_device("rot-bob")
    write_auth_files(auth, monkeypatch)
    broker.start()
    old = Session(broker.port, alice.key, alice.token)
    other = Session(broker.port, bob.key, bob.token)
    bridge = Session(broker.port, BRIDGE_USER, BRIDGE_PASSWORD)

    new_token = device_token_rotate(key=alice.key)
    write_auth_files(auth, monkeypatch)
    broker.process.send_signal(signal.SIGHUP)
    try:
        assert old.disconnected.wait(5), "the old token's connection is dropped on reload"
        assert Session(broker.port, alice.key, alice.token).refused
        assert not Session(broker.port, alice.key, new_token).refused
        assert not other.disconnected.is_set() and not bridge.disconnected.is_set()
        assert not other.publish(f"devices/{bob.key}/telemetry").is_failure
    finally:
        for session in (old, other, bridge):
            session.close()


def test_the_files_are_refused_when_they_would_be_wrong(make_device, tmp_path, monkeypatch):
    """No bridge password, or a device named like the bridge user: an error, nothing written."""
    make_device(BRIDGE_USER)
    with pytest.raises(CommandError, match="no bridge password"):
        call_command("mqtt_auth_files", out=tmp_path, bridge_user="x", bridge_password_env="UNSET_VARIABLE_NAME")
    with pytest.raises(CommandError, match="like the bridge user"):
        write_auth_files(tmp_path, monkeypatch)
    assert list(tmp_path.iterdir()) == []


def test_devices_without_a_broker_hash_are_left_out_and_named(make_device, tmp_path, monkeypatch, capsys):
    """A device registered before broker hashes existed has no MQTT login until its token is rotated."""
    make_device("legacy-1")
    make_device("current-1")
    Device.objects.filter(key="legacy-1").update(broker_hash="")
    write_auth_files(tmp_path, monkeypatch)
    users = [line.split(":")[0] for line in (tmp_path / "passwd").read_text().splitlines()]
    assert users == ["current-1", "hub-bridge"]
    assert "legacy-1" in capsys.readouterr().err
    assert (tmp_path / "passwd").stat().st_mode & 0o777 == 0o640
    assert "user hub-bridge\n" in (tmp_path / "acl").read_text()
