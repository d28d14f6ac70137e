"""MQTT publishers for tests and benchmarks: QoS 1, recording what the broker acknowledged (PUBACK)."""

import threading

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Publisher:
    """One device's MQTT connection; `acked` holds the ts of messages the broker PUBACKed."""

    def __init__(
        self, host: str, port: int, key: str, *, client_id: str | None = None, persistent: bool = False
    ) -> None:
        self.key = key
        self.acked: set[int] = set()
        self._pending: dict[int, int] = {}
        self._early: set[int] = set()  # PUBACKs that arrived before publish() returned the mid
        self._lock = threading.Lock()
        self._all_acked = threading.Condition(self._lock)  # notified when nothing is pending
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pub-{key}",
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,  # persistent: the broker keeps the session, paho resends in flight
        )
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            ts = self._pending.pop(mid, None)
            if ts is None:
                self._early.add(mid)
            else:
                self.acked.add(ts)
            if not self._pending:
                self._all_acked.notify_all()

    def publish(self, ts: int, values: dict, *, topic: str | None = None, payload: bytes | None = None) -> None:
        body = payload if payload is not None else orjson.dumps({"ts": ts, "values": values})
        # Never hold our lock inside paho: its network thread may be in _on_publish waiting for it.
        info = self.client.publish(topic or f"devices/{self.key}/telemetry", body, qos=1)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked.add(ts)
            else:
                self._pending[info.mid] = ts

    def wait_all_acked(self, timeout: float = 60) -> None:
        """Block until the broker PUBACKed every message published so far (or `timeout` s passed)."""
        with self._all_acked:
            self._all_acked.wait_for(lambda: not self._pending, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
