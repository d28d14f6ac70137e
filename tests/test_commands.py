"""Talking back to devices (issue 24): attributes and commands over WebSocket and ThingsBoard's HTTP device API,
sent and followed through the operator API, against PostgreSQL: both directions, timeouts, a device that answers
twice, a command for a device that is away (queued, delivered when it returns), a device deleted or rotated while
a command waits, and the bound per device."""

import asyncio

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing.websocket import WebsocketCommunicator

from api.credentials import api_token_create
from control.models import Attribute, Command
from devices.services import device_delete, device_token_rotate
from tests.api.conftest import token_client
from tests.inprocess import in_process, in_process_client

pytestmark = pytest.mark.usefixtures("postgres", "redis")


@pytest.fixture
async def operator(runtime, operator_user):
    token = await sync_to_async(api_token_create)(user=operator_user, name="ops", scope="write")
    async with token_client(runtime, token) as client:
        yield client


class Socket:
    """A device's WebSocket: telemetry and control frames out, acks, commands and updates in."""

    def __init__(self, runtime, token: str) -> None:
        self.communicator = WebsocketCommunicator(in_process(runtime), f"/ws/v1/{token}/telemetry")

    async def __aenter__(self) -> "Socket":
        connected, _ = await self.communicator.connect(timeout=10)
        assert connected
        return self

    async def __aexit__(self, *exc) -> None:
        await self.communicator.disconnect()

    async def send(self, payload: object) -> None:
        await self.communicator.send_to(text_data=orjson.dumps(payload).decode())

    async def receive(self, timeout: float = 5) -> dict:
        return orjson.loads(await self.communicator.receive_from(timeout))

    async def until(self, name: str, timeout: float = 5) -> dict:
        """The next message naming `name` (acks and others before it are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.receive(timeout)
                if name in message:
                    return message


async def test_attributes_both_ways_over_http_as_thingsboard_devices_use_them(runtime, operator, make_device):
    device = await sync_to_async(make_device)("th-1")
    async with in_process_client(runtime) as thing:
        base = f"/api/v1/{device.token}"
        assert (
            await thing.post(f"{base}/attributes", json={"firmware": "1.2.0", "mode": {"eco": True}})
        ).status_code == 200
        set_shared = await operator.post("/api/v1/devices/th-1/attributes/shared", json={"interval": 5, "target": 21.5})
        assert set_shared.status_code == 200, set_shared.text
        got = (
            await thing.get(f"{base}/attributes", params={"clientKeys": "firmware", "sharedKeys": "interval"})
        ).json()
        assert got == {"client": {"firmware": "1.2.0"}, "shared": {"interval": 5}}
        assert (await thing.get(f"{base}/attributes")).json() == {
            "client": {"firmware": "1.2.0", "mode": {"eco": True}}, "shared": {"interval": 5, "target": 21.5}
        }  # fmt: skip

        await asyncio.sleep(0.3)  # word of the changes above is on its way (a poll from now on hears only later ones)
        poll = asyncio.create_task(thing.get(f"{base}/attributes/updates", params={"timeout": 5000}))
        await asyncio.sleep(0.3)
        await operator.post("/api/v1/devices/th-1/attributes/shared", json={"interval": 10})
        update = await poll
        assert (update.status_code, update.json()) == (200, {"interval": 10})
        poll = asyncio.create_task(thing.get(f"{base}/attributes/updates", params={"timeout": 5000}))
        await asyncio.sleep(0.3)
        assert (
            await operator.delete("/api/v1/devices/th-1/attributes/shared", params={"keys": "target"})
        ).status_code == 200
        assert (await poll).json() == {"deleted": ["target"]}
        assert (await thing.get(f"{base}/attributes/updates", params={"timeout": 200})).status_code == 408

        await operator.post("/api/v1/devices/th-1/attributes/server", json={"room": "B12"})
        assert "room" not in str((await thing.get(f"{base}/attributes")).json()), "server attributes stay on the hub"
        listed = (await operator.get("/api/v1/devices/th-1/attributes")).json()
        assert [a["key"] for a in listed["server"]] == ["room"] and listed["server"][0]["updated_by"] == "ops"
        assert {a["key"]: a["updated_by"] for a in listed["client"]} == {"firmware": "device", "mode": "device"}
        refused = await operator.post("/api/v1/devices/th-1/attributes/client", json={"firmware": "x"})
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "scope"
        bad = await thing.post(f"{base}/attributes", json={"bad key": 1})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "bad key"
        assert (await thing.post("/api/v1/nope/attributes", json={"a": 1})).status_code == 401


async def test_commands_over_http_long_poll_two_way_one_way_and_client_side(runtime, operator, make_device):
    device = await sync_to_async(make_device)("th-1")
    async with in_process_client(runtime) as thing:
        base = f"/api/v1/{device.token}"
        sent = asyncio.create_task(operator.post("/api/v1/devices/th-1/rpc", json={
            "method": "setInterval", "params": {"seconds": 5}, "timeout": 5000}))  # fmt: skip
        command = await thing.get(f"{base}/rpc", params={"timeout": 5000})
        assert command.status_code == 200, command.text
        body = command.json()
        assert (body["method"], body["params"]) == ("setInterval", {"seconds": 5})
        assert (await thing.post(f"{base}/rpc/{body['id']}", json={"ok": True})).status_code == 200
        answer = await sent
        assert answer.status_code == 200, answer.text
        assert (answer.json()["state"], answer.json()["response"]) == ("successful", {"ok": True})
        twice = await thing.post(f"{base}/rpc/{body['id']}", json={"ok": False})
        assert twice.status_code == 404, "a second answer changes nothing"
        assert (await Command.objects.aget(id=body["id"])).response == {"ok": True}

        one_way = asyncio.create_task(operator.post("/api/v1/devices/th-1/rpc", json={
            "method": "reboot", "two_way": False, "timeout": 5000}))  # fmt: skip
        assert (await thing.get(f"{base}/rpc", params={"timeout": 5000})).json()["method"] == "reboot"
        assert (await one_way).json()["state"] == "delivered", "a one-way command ends when delivered"

        assert (await thing.post(f"{base}/rpc", json={"method": "getCurrentTime", "params": {}})).json()["time"] > 0
        unknown = await thing.post(f"{base}/rpc", json={"method": "launch", "params": {}})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_method"
        assert (await thing.get(f"{base}/rpc", params={"timeout": 100})).status_code == 408


async def test_commands_and_attributes_over_websocket(runtime, operator, make_device):
    device = await sync_to_async(make_device)("ws-1")
    async with Socket(runtime, device.token) as socket:
        await socket.send({"$attributes": {"firmware": "2.0"}})
        await socket.send({"t": 1.5})
        while (await socket.until("ack"))["ack"] < 2:  # control frames are acked in turn with telemetry
            pass
        assert (await Attribute.objects.aget(key="firmware")).value == "2.0"

        sent = asyncio.create_task(
            operator.post("/api/v1/devices/ws-1/rpc", json={"method": "getState", "timeout": 5000})
        )
        rpc = (await socket.until("rpc"))["rpc"]
        assert (rpc["method"], rpc["params"]) == ("getState", None)
        await socket.send({"$rpc": {"id": rpc["id"], "response": {"state": "on"}}})
        assert (await sent).json()["response"] == {"state": "on"}
        await socket.send({"$rpc": {"id": rpc["id"], "response": {"state": "off"}}})
        error = await socket.until("error")
        assert error["error"]["code"] == "unknown_command" and error["error"]["frame"] == 4

        await operator.post("/api/v1/devices/ws-1/attributes/shared", json={"interval": 7})
        assert (await socket.until("attributes"))["attributes"] == {"interval": 7}
        await socket.send({"$attributes_request": {"id": 9, "sharedKeys": ["interval"], "clientKeys": ["firmware"]}})
        asked = (await socket.until("attributes_response"))["attributes_response"]
        assert asked == {"id": 9, "client": {"firmware": "2.0"}, "shared": {"interval": 7}}
        await socket.send({"$call": {"id": "c1", "method": "getCurrentTime"}})
        assert (await socket.until("call_response"))["call_response"]["result"]["time"] > 0

        one_way = asyncio.create_task(operator.post("/api/v1/devices/ws-1/rpc", json={"method": "blink",
                                                                                  "two_way": False}))  # fmt: skip
        rpc = (await socket.until("rpc"))["rpc"]
        await socket.send({"$rpc": {"id": rpc["id"]}})  # received
        assert (await one_way).json()["state"] == "delivered"
        await socket.send({"$bogus": {}})
        assert (await socket.until("error"))["error"]["code"] == "invalid_shape"


async def test_a_command_nobody_answers_times_out_and_one_for_an_absent_device_expires(runtime, operator, make_device):
    await sync_to_async(make_device)("quiet-1")
    device = await sync_to_async(make_device)("away-1")
    away = await operator.post("/api/v1/devices/away-1/rpc", json={"method": "x", "timeout": 300})
    assert away.status_code == 504 and away.json()["state"] == "expired", away.text
    async with Socket(runtime, device.token) as socket:
        sent = asyncio.create_task(operator.post("/api/v1/devices/away-1/rpc", json={"method": "y", "timeout": 500}))
        rpc = (await socket.until("rpc"))["rpc"]
        await socket.send({"$rpc": {"id": rpc["id"]}})  # received, never answered
        answer = await sent
        assert answer.status_code == 504 and answer.json()["state"] == "timed_out", answer.text
        await socket.send({"$rpc": {"id": rpc["id"], "response": 1}})
        assert (await socket.until("error"))["error"]["code"] == "unknown_command", "too late"


async def test_a_persistent_command_waits_for_its_device_and_is_redelivered_until_answered(
    runtime, operator, make_device
):
    device = await sync_to_async(make_device)("away-1")
    queued = await operator.post("/api/v1/devices/away-1/rpc", json={"method": "setPoint", "params": 21,
                                                                     "persistent": True, "timeout": 60000})  # fmt: skip
    assert queued.status_code == 202 and queued.json()["state"] == "queued", queued.text
    command_id = queued.json()["id"]
    async with Socket(runtime, device.token) as socket:  # comes back, takes it, drops before answering
        assert (await socket.until("rpc"))["rpc"]["id"] == command_id
    assert (await Command.objects.aget(id=command_id)).state == "sent"
    async with Socket(runtime, device.token) as socket:  # at least once: handed again, same id
        rpc = (await socket.until("rpc"))["rpc"]
        assert (rpc["id"], rpc["params"]) == (command_id, 21)
        await socket.send({"$rpc": {"id": command_id, "response": "ok"}})
        await socket.until("ack")
    command = (await operator.get(f"/api/v1/devices/away-1/rpc/{command_id}")).json()
    assert (command["state"], command["response"], command["attempts"]) == ("successful", "ok", 2)
    listed = (await operator.get("/api/v1/devices/away-1/rpc")).json()
    assert [c["id"] for c in listed["results"]] == [command_id]


async def test_a_device_deleted_or_rotated_while_a_command_waits(runtime, operator, make_device):
    rotated = await sync_to_async(make_device)("rot-1")
    await operator.post("/api/v1/devices/rot-1/rpc", json={"method": "m", "persistent": True})
    token = await sync_to_async(device_token_rotate)(key="rot-1")
    async with Socket(runtime, token) as socket:
        assert (await socket.until("rpc"))["rpc"]["method"] == "m", "the device, not the token, has it"
    assert rotated.token != token

    await sync_to_async(make_device)("gone-1")
    sent = asyncio.create_task(operator.post("/api/v1/devices/gone-1/rpc", json={"method": "m", "timeout": 5000}))
    await asyncio.sleep(0.5)
    await sync_to_async(device_delete)(key="gone-1")
    answer = await sent
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_device", answer.text


async def test_open_commands_are_bounded_per_device(runtime, operator, make_device, settings):
    settings.HUB_COMMANDS_MAX_OPEN = 3
    await sync_to_async(make_device)("busy-1")
    await sync_to_async(make_device)("calm-1")
    for _ in range(3):
        assert (
            await operator.post("/api/v1/devices/busy-1/rpc", json={"method": "m", "persistent": True})
        ).status_code == 202
    refused = await operator.post("/api/v1/devices/busy-1/rpc", json={"method": "m", "persistent": True})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_commands"
    assert (
        await operator.post("/api/v1/devices/calm-1/rpc", json={"method": "m", "persistent": True})
    ).status_code == 202
    bad = await operator.post("/api/v1/devices/calm-1/rpc", json={"method": "m", "timeout": 10**9})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "timeout"


@pytest.mark.serial
async def test_a_queued_command_survives_a_hub_killed_with_sigkill(hub_process, transactional_db, operator_user):
    """Queued on one hub process, which is then SIGKILLed; the device reaches another and gets it."""
    import signal

    import websockets
    from django.conf import settings

    from tests.conftest import database_url_for_tests

    env = {"HUB_DATABASE_URL": database_url_for_tests(), "HUB_SECRET_KEY": settings.SECRET_KEY}
    device = await sync_to_async(device_create_with_token)("kept-1")
    token = await sync_to_async(api_token_create)(user=operator_user, name="ops", scope="write")
    first = await hub_process(**env).start().ready()
    async with httpx.AsyncClient(base_url=first.http, headers={"Authorization": f"Bearer {token}"}) as operator:
        queued = await operator.post("/api/v1/devices/kept-1/rpc", json={"method": "calibrate", "persistent": True})
        assert queued.status_code == 202, queued.text
    first.stop(signal.SIGKILL)
    second = await hub_process(**env).start().ready()
    async with websockets.connect(f"{second.ws}/ws/v1/{device}/telemetry") as socket:
        rpc = orjson.loads(await asyncio.wait_for(socket.recv(), 10))["rpc"]
        assert (rpc["id"], rpc["method"]) == (queued.json()["id"], "calibrate")
        await socket.send(orjson.dumps({"$rpc": {"id": rpc["id"], "response": {"ok": True}}}).decode())
        assert "ack" in orjson.loads(await asyncio.wait_for(socket.recv(), 10))
    command = await Command.objects.aget(id=rpc["id"])
    assert (command.state, command.response) == ("successful", {"ok": True})


def device_create_with_token(key: str) -> str:
    from devices.services import device_create

    return device_create(key=key)[1]


async def test_each_http_poll_takes_one_command_and_leaves_the_rest_queued(runtime, operator, make_device):
    device = await sync_to_async(make_device)("poll-1")
    for method in ("a", "b", "c"):
        await operator.post("/api/v1/devices/poll-1/rpc", json={"method": method, "persistent": True})
    async with in_process_client(runtime) as thing:
        taken = [(await thing.get(f"/api/v1/{device.token}/rpc", params={"timeout": 1000})).json()["method"]
                 for _ in range(3)]  # fmt: skip
        assert taken == ["a", "b", "c"]
        assert (await thing.get(f"/api/v1/{device.token}/rpc", params={"timeout": 100})).status_code == 408


async def test_commands_waiting_for_absent_devices_hold_no_database_connection(runtime, operator, make_device):
    """More two-way commands waiting at once than the pool has connections (HUB_DB_POOL_SIZE, 10), for devices
    that are away: a connected device's command is still handed over and answered at once."""
    device = await sync_to_async(make_device)("here-1")
    for i in range(12):
        await sync_to_async(make_device)(f"away-{i}")
    asks = [operator.post(f"/api/v1/devices/away-{i}/rpc", json={"method": "m", "timeout": 8000}) for i in range(12)]
    waiting = [asyncio.create_task(ask) for ask in asks]
    await asyncio.sleep(1.0)
    async with Socket(runtime, device.token) as socket:
        began = asyncio.get_running_loop().time()
        sent = asyncio.create_task(operator.post("/api/v1/devices/here-1/rpc", json={"method": "now", "timeout": 5000}))
        rpc = (await socket.until("rpc"))["rpc"]
        await socket.send({"$rpc": {"id": rpc["id"], "response": "ok"}})
        answer = await sent
        took = asyncio.get_running_loop().time() - began
    assert answer.status_code == 200 and took < 2, (answer.status_code, took)
    assert {(await w).status_code for w in waiting} == {504}
