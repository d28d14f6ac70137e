"""Attributes and commands over MQTT (issue 24), through a real Mosquitto and a bridge worker subprocess, with the
operator API of an in-process hub: the two meet on Redis, as separate processes do in production."""

import asyncio
import queue

import orjson
import paho.mqtt.client as mqtt
import pytest
from asgiref.sync import sync_to_async
from paho.mqtt.enums import CallbackAPIVersion

from api.credentials import api_token_create
from control.models import Attribute
from tests.api.conftest import token_client
from tests.bridge_process import RUN, BridgeProcess
from tests.mqtt_broker import MosquittoBroker
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("postgres", "redis", "mqtt")


class MqttDevice:
    """A device on MQTT: subscribed to its own topics, with what arrives in a queue."""

    def __init__(self, port: int, key: str) -> None:
        self.key, self.inbox = key, queue.Queue()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"dev-{RUN}-{key}")
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, orjson.loads(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"devices/{key}/#", qos=1)  # what the hub sends it (and its own publishes)
        self.client.loop_start()

    def publish(self, suffix: str, payload: object) -> None:
        self.client.publish(f"devices/{self.key}/{suffix}", orjson.dumps(payload), qos=1).wait_for_publish(5)

    async def until(self, suffix: str, timeout: float = 10) -> tuple[str, object]:
        """The next message the hub sent on a topic ending with `suffix` (its own publishes skipped)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                topic, payload = await asyncio.to_thread(self.inbox.get, timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if topic.startswith(f"devices/{self.key}/{suffix.split('/')[0]}") and suffix in topic:
                return topic, payload
        raise TimeoutError(suffix)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def test_attributes_and_commands_both_ways_over_mqtt(runtime, operator_user, make_device, tmp_path):
    broker = MosquittoBroker(tmp_path).start()
    bridge = BridgeProcess(tmp_path, broker.url, f"ctl-{RUN}").start()
    device = await sync_to_async(make_device)(f"m{RUN}")
    thing = MqttDevice(broker.port, device.key)
    token = await sync_to_async(api_token_create)(user=operator_user, name="ops", scope="write")
    try:
        await bridge.subscribed()
        thing.publish("telemetry", {"t": 1})  # heard: this worker hands it its commands from now on
        await asyncio.sleep(0.5)
        async with token_client(runtime, token) as operator:
            sent = asyncio.create_task(operator.post(f"/api/v1/devices/{device.key}/rpc", json={
                "method": "setInterval", "params": {"s": 5}, "timeout": 10000}))  # fmt: skip
            topic, command = await thing.until("rpc/request/")
            assert topic == f"devices/{device.key}/rpc/request/{command['id']}"
            assert (command["method"], command["params"]) == ("setInterval", {"s": 5})
            thing.publish(f"rpc/response/{command['id']}", {"done": True})
            answer = await sent
            assert answer.status_code == 200, answer.text
            assert (answer.json()["state"], answer.json()["response"]) == ("successful", {"done": True})

            await operator.post(f"/api/v1/devices/{device.key}/attributes/shared", json={"interval": 30})
            assert (await thing.until("attributes/updates"))[1] == {"interval": 30}

            thing.publish("attributes", {"firmware": "3.1"})

            async def reported() -> bool:
                return await Attribute.objects.filter(key="firmware", scope="client").aexists()

            await eventually(reported, timeout=10, what="the client attribute stored")
            thing.publish("attributes/request/7", {"clientKeys": "firmware", "sharedKeys": "interval"})
            topic, asked = await thing.until("attributes/response/7")
            assert asked == {"client": {"firmware": "3.1"}, "shared": {"interval": 30}}
            thing.publish("call/request/1", {"method": "getCurrentTime", "params": {}})
            assert (await thing.until("call/response/1"))[1]["time"] > 0
    finally:
        thing.close()
        bridge.stop()
        broker.stop()
