"""A private Mosquitto with the dynamic-security plugin on a free loopback port, and an MQTT 5 session that records
what the broker answers (CONNACK, PUBACK, SUBACK reason codes, messages, being disconnected)."""

import getpass
import glob
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.mqtt_broker import MosquittoBroker
from tests.services import REQUIRED

PLUGIN_NAME = "mosquitto_dynamic_security.so"

CONFIG = """
# Run as the current user: as root Mosquitto would switch to `mosquitto`, who cannot use pytest's tmp dir (and must
# own the plugin's file: it rewrites it on every change).
user {user}
listener {port} 127.0.0.1
allow_anonymous false
set_tcp_nodelay true
plugin {plugin}
plugin_opt_config_file {file}
"""


def dynsec_plugin() -> str:
    """The plugin's path (Debian's multiarch directory, or /usr/lib as in the eclipse-mosquitto image); skip, or
    fail under HUB_REQUIRE_SERVICES=1, when Mosquitto or the plugin is not installed."""
    found = sorted(glob.glob(f"/usr/lib/*/{PLUGIN_NAME}")) + sorted(glob.glob(f"/usr/lib/{PLUGIN_NAME}"))
    if found and (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        return found[0]
    message = "Mosquitto with its dynamic-security plugin is not installed"
    if REQUIRED:
        pytest.fail(f"{message} and HUB_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{message} (set HUB_REQUIRE_SERVICES=1 to fail instead)")


class DynsecBroker(MosquittoBroker):
    """Its plugin file is `file`: write it (mosquitto_ctrl dynsec init, or mqtt_dynsec_sync --init) before `start`."""

    def __init__(self, workdir: Path, plugin: str) -> None:
        super().__init__(workdir)
        self.file = workdir / "dynamic-security.json"
        self.config.write_text(CONFIG.format(user=getpass.getuser(), port=self.port, plugin=plugin, file=self.file))


NOT_AUTHORIZED = 0x87  # MQTT 5 reason code, in CONNACK, PUBACK and SUBACK


class Session:
    """One MQTT 5 client (loop thread), logged in as `username`; `refused` when the CONNACK said no."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.connack: ReasonCode | None = None
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.received: list[str] = []
        self.disconnected = threading.Event()
        self._event = threading.Condition()
        # No reconnecting: a session the broker closes stays closed (and `close` needs no reconnect wait).
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self._record(setattr, self, "connack", reason)
        self.client.on_publish = lambda _c, _u, mid, reason, _p: self._record(self.pubacks.__setitem__, mid, reason)
        self.client.on_subscribe = lambda _c, _u, mid, reasons, _p: self._record(self.subacks.__setitem__, mid, reasons)
        self.client.on_message = lambda _c, _u, message: self._record(self.received.append, message.topic)
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")

    def _record(self, change: Callable, *args: object) -> None:
        with self._event:
            change(*args)
            self._event.notify_all()

    def _wait(self, condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        with self._event:
            assert self._event.wait_for(condition, timeout=timeout), f"no {what} from the broker"

    @property
    def refused(self) -> bool:
        return self.connack is not None and self.connack.is_failure

    def publish(self, topic: str) -> int:
        """QoS 1; the PUBACK's reason code (below 0x80: accepted)."""
        mid = self.client.publish(topic, b'{"x": 1}', qos=1).mid
        self._wait(lambda: mid in self.pubacks, f"PUBACK for {topic}")
        return self.pubacks[mid].value

    def subscribe(self, topic: str) -> int:
        """The SUBACK's reason code (below 0x80: granted)."""
        _, mid = self.client.subscribe(topic, qos=1)
        self._wait(lambda: mid in self.subacks, f"SUBACK for {topic}")
        return self.subacks[mid][0].value

    def wait_received(self, count: int) -> list[str]:
        self._wait(lambda: len(self.received) >= count, f"{count} messages")
        return self.received

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def logs_in(port: int, username: str, password: str) -> bool:
    """Whether the broker lets this login in (the session is closed again)."""
    session = Session(port, username, password)
    session.close()
    return not session.refused
