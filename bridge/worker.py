"""The MQTT bridge: broker → the one ingest entry point → PUBACK only after commit.

paho-mqtt runs its network loop in its own thread; messages are handed to asyncio with
call_soon_threadsafe, parsed and queued for the process's writer like any other transport, and
acknowledged to the broker (manual ack) only when the writer's commit future resolves. Bad messages are
acknowledged too (so the broker does not redeliver them forever), counted, and reported; so are messages of
a device deleted while they waited for commit, and messages the database refused to store (the writer
isolates them: `unstorable_value`). Only a commit that did not happen (shutdown) leaves a message unacked,
for the broker to redeliver.
"""

import asyncio
import logging
import random
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import partial

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import start_http_server

from bridge.config import BridgeConfig
from bridge.control import CONTROL_FILTERS, BridgeControl, control_kind
from bridge.stats import BridgeStats
from control.bus import ControlBus
from core import metrics
from devices.services import DeviceIdentity, device_identity_by_key
from ingest.parsing import IngestError
from ingest.service import Ingest
from ingest.writer import DeviceDeleted

logger = logging.getLogger(__name__)

_UNKNOWN_DEVICE = "unknown_device"
_BAD_TOPIC = "bad_topic"


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: float
    generation: int  # the connection it arrived on: packet ids are only meaningful within it


def device_key_of(topic: str) -> str | None:
    """`devices/<KEY>/telemetry` → KEY."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "devices" and parts[2] == "telemetry" and parts[1]:
        return parts[1]
    return None


class Bridge:
    """One worker: owns the paho client, the consumer task and the status line."""

    def __init__(self, config: BridgeConfig, ingest: Ingest, bus: ControlBus | None = None) -> None:
        self.config = config
        self._ingest = ingest
        self.stats = BridgeStats()
        self.connected = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # paho's thread appends here and wakes the loop once per burst, not once per message (each wake-up
        # is a write to the loop's self-pipe under the GIL: ~10% of the bridge at 10,000 messages/s).
        self._inbox: deque[Incoming] = deque()
        self._arrived = asyncio.Event()
        self._wake_pending = False
        self._devices: dict[str, tuple[DeviceIdentity | None, float]] = {}
        self._generation = 0
        self._ack_lock = threading.Lock()
        self._client = self._make_client()
        # Attributes and commands over MQTT (bridge/control.py), with word from the hub's processes.
        self._control = BridgeControl(bus, self._publish) if bus is not None else None

    def _make_client(self) -> mqtt.Client:
        c = self.config
        v5 = c.protocol == 5
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=c.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,  # 3.1.1: a persistent session
            manual_ack=True,
        )
        if c.username:
            client.username_pw_set(c.username, c.password)
        if c.tls:
            client.tls_set_context(ssl.create_default_context())
        # Exponential backoff; a random base spreads the reconnects of many workers (jitter).
        # paho annotates the delays as int, but only sleeps on them: a float keeps the jitter.
        client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5), max_delay=30)  # type: ignore[arg-type]  # noqa: S311
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # paho's thread ----------------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.warning("bridge: broker refused the connection: %s", reason_code)
            return
        with self._ack_lock:
            # Acks still pending from the previous connection must not hit messages of this one that
            # reuse their packet ids; their messages are redelivered (and stored once) instead.
            self._generation += 1
            generation = self._generation
        self._loop.call_soon_threadsafe(self.stats.forget_before, generation)
        filters = [self.config.subscription]
        if self._control is not None:
            filters += [self.config.shared_form(f) for f in CONTROL_FILTERS]
        client.subscribe([(topic_filter, 1) for topic_filter in filters])
        logger.info(
            "bridge: connected as %s (session present: %s), subscribed to %s",
            self.config.client_id,
            flags.session_present,
            self.config.subscription,
        )
        self._loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._loop.call_soon_threadsafe(self.connected.clear)
        if reason_code != 0:
            logger.warning("bridge: disconnected (%s); reconnecting with backoff", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        incoming = Incoming(
            message.topic, message.payload, message.mid, message.qos, time.monotonic(), self._generation
        )
        self._inbox.append(incoming)
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._arrived.set)

    # asyncio ----------------------------------------------------------------------------------------

    def connect(self) -> None:
        c = self.config
        properties = None
        if c.protocol == 5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = c.session_expiry
            properties.ReceiveMaximum = c.receive_maximum
            self._client.connect_async(c.host, c.port, keepalive=30, clean_start=False, properties=properties)
        else:
            self._client.connect_async(c.host, c.port, keepalive=30)
        self._client.loop_start()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop`, then drain: commit what is queued, ack it, disconnect."""
        metrics.BRIDGE_LAG.set_function(self.stats.lag)  # computed when scraped
        metrics.BRIDGE_INFLIGHT.set_function(lambda: self.stats.inflight)
        if self.config.metrics_port:
            start_http_server(self.config.metrics_port, addr=self.config.metrics_host)
            logger.info("bridge: metrics at http://%s:%d/metrics", self.config.metrics_host, self.config.metrics_port)
        self.connect()
        reporter = asyncio.create_task(self._report(stop), name="bridge-stats")
        consumer = asyncio.create_task(self._consume(), name="bridge-consumer")
        await stop.wait()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await self._ingest.drain()  # commits what is queued; the resolved futures ack their messages
        await asyncio.sleep(0)  # let the last ack callbacks run
        if self._control is not None:
            await self._control.close()
        self._client.disconnect()
        self._client.loop_stop()
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        self._log_stats(" (stopped)")

    async def _consume(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            self._wake_pending = False  # before draining: what arrives from now on wakes us again
            while self._inbox:
                await self._handle(self._inbox.popleft())

    async def _handle(self, message: Incoming) -> None:
        self.stats.received += 1
        if message.qos > 0:
            self.stats.unacked[(message.generation, message.mid)] = message.received_at
        key = device_key_of(message.topic)
        if key is None and self._control is not None and (control := control_kind(message.topic)):
            await self._control_message(message, *control)
            return
        device = await self._device(key) if key else None
        if device is not None and self._control is not None:
            self._control.heard(device)
        if device is None:
            reason = _UNKNOWN_DEVICE if key else _BAD_TOPIC
            self._reject(message, key, reason, f"no device {key!r}" if key else "topic is not devices/<KEY>/telemetry")
            return
        try:
            future = await self._ingest.message(device=device, body=message.payload, transport="mqtt")
        except IngestError as error:
            self._reject(message, key, error.code, error.message, error.as_dict())
            return
        future.add_done_callback(partial(self._committed, message))

    async def _control_message(self, message: Incoming, key: str, kind: str, ident: str) -> None:
        """An attribute or command message: handled off the consumer's turn, acked once done (or refused)."""
        device = await self._device(key)
        if device is None or self._control is None:
            self._reject(message, key, _UNKNOWN_DEVICE, f"no device {key!r}")
            return
        self._control.heard(device)
        done = asyncio.ensure_future(self._control.handle(device, kind, ident, message.payload))
        done.add_done_callback(partial(self._control_done, message, key))

    def _control_done(self, message: Incoming, key: str, done: asyncio.Future[None]) -> None:
        if done.cancelled():
            return  # shutting down: not acked, so the broker delivers it again
        error = done.exception()
        if error is None:
            self._ack(message)
        elif isinstance(error, IngestError):
            self._reject(message, key, error.code, error.message, error.as_dict())
        else:
            logger.warning("bridge: %s from %s not handled (%r); the broker delivers it again", message.topic,
                           key, error)  # fmt: skip

    def _publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1)  # paho queues it for its network thread

    def _committed(self, message: Incoming, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return  # not committed: no PUBACK, so the broker redelivers it to this session later
        error = future.exception()
        if error is None:
            self.stats.stored += 1
            self._ack(message)
        elif isinstance(error, DeviceDeleted):
            # Deleted since it was looked up: its redeliveries would fail the same way forever and hold the
            # session's receive window, so forget the key and ack the message as from an unknown device.
            key = device_key_of(message.topic)
            if key is not None:  # it has one: the device was looked up by it
                self._devices.pop(key, None)
            self._reject(message, key, _UNKNOWN_DEVICE, f"device {key!r} was deleted")
        elif isinstance(error, IngestError):
            # The database refuses its content: a redelivery would be refused again and hold a slot of the
            # session's receive window each time, stalling every device behind it. Acked, as rejected.
            self._reject(message, device_key_of(message.topic), error.code, error.message, error.as_dict())
        # Any other failure: not committed, no PUBACK, so the broker redelivers it to this session later.

    def _ack(self, message: Incoming) -> None:
        self.stats.unacked.pop((message.generation, message.mid), None)
        with self._ack_lock:
            if message.generation != self._generation:
                return  # that connection is gone; the broker redelivers the message on this one
            if message.qos > 0:
                self._client.ack(message.mid, message.qos)
        self.stats.acked += 1
        metrics.BRIDGE_ACKED.inc()

    def _reject(self, message: Incoming, key: str | None, code: str, text: str, detail: dict | None = None) -> None:
        self.stats.reject(key or message.topic[:200], code, text)
        metrics.MESSAGES_REJECTED.labels("mqtt", code).inc()
        self._ack(message)  # acknowledged, so a bad message is not redelivered forever
        if self.config.error_topic and key and code != _UNKNOWN_DEVICE:
            error = {"error": detail or {"code": code, "message": text}}
            self._client.publish(f"devices/{key}/errors", orjson.dumps(error), qos=0)

    async def _device(self, key: str) -> DeviceIdentity | None:
        """Cached lookup, found or not, re-checked after `device_cache_seconds`: devices are created,
        deleted and renamed while the bridge runs."""
        cached = self._devices.get(key)
        if cached is not None and time.monotonic() - cached[1] < self.config.device_cache_seconds:
            return cached[0]
        identity = await device_identity_by_key(key=key)
        self._devices[key] = (identity, time.monotonic())
        return identity

    async def _report(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.config.stats_seconds)
            self._log_stats()

    def _log_stats(self, suffix: str = "") -> None:
        logger.info("%s%s", self.stats.line(), suffix)
        self.stats.reasons.clear()
        for line in self.stats.refusals():  # named devices and reasons, once per interval however many
            logger.warning("%s", line)
