"""Attributes and commands over MQTT (docs/mqtt.md, docs/commands.md), for one bridge worker.

A device publishes its client attributes to `devices/<KEY>/attributes`, asks for attributes on
`devices/<KEY>/attributes/request/<ID>` (answered on `.../attributes/response/<ID>`), answers a command on
`devices/<KEY>/rpc/response/<ID>` (any payload confirms a one-way command) and calls the hub on
`devices/<KEY>/call/request/<ID>` (answered on `.../call/response/<ID>`). The hub publishes shared attribute
changes to `devices/<KEY>/attributes/updates` and commands to `devices/<KEY>/rpc/request/<ID>`, at QoS 1.

A worker hands commands only to devices it has heard from over MQTT lately (a device on a WebSocket or HTTP
gets its own from its transport), and hands a device what it was handed before and did not confirm again when
it reappears: at least once, with ids, so the device drops a repeat."""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from control.bus import ControlBus
from control.commands import command_for_device
from control.device_side import (
    attributes_asked,
    client_attributes_report,
    command_reply,
    commands_taken,
    device_call,
    shared_update,
)
from control.refusals import ControlRefused
from devices.services import DeviceIdentity
from ingest.parsing import ErrorCode, IngestError

logger = logging.getLogger(__name__)

CONTROL_FILTERS = (
    "devices/+/attributes",
    "devices/+/attributes/request/+",
    "devices/+/rpc/response/+",
    "devices/+/call/request/+",
)
SEEN_SECONDS = 600.0  # a device heard from over MQTT this recently gets its commands from this worker
Publish = Callable[[str, bytes], None]  # topic, payload: at QoS 1


def control_kind(topic: str) -> tuple[str, str, str] | None:
    """`devices/<KEY>/<kind>[/request|response/<ID>]` → (KEY, kind, ID or ""), for the control topics."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "devices" and parts[2] == "attributes" and parts[1]:
        return parts[1], "attributes", ""
    if len(parts) == 5 and parts[0] == "devices" and parts[1] and parts[4]:
        kind = {("attributes", "request"): "attributes_request", ("rpc", "response"): "rpc_response",
                ("call", "request"): "call"}.get((parts[2], parts[3]))  # fmt: skip
        if kind is not None:
            return parts[1], kind, parts[4]
    return None


class BridgeControl:
    def __init__(self, bus: ControlBus, publish: Publish) -> None:
        self._bus, self._publish = bus, publish
        self._seen: dict[str, tuple[DeviceIdentity, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        bus.listen_all(self._word)

    def heard(self, device: DeviceIdentity) -> None:
        """A message from `device` over MQTT: one that reappears gets what it was handed and did not confirm."""
        seen = self._seen.get(device.key)
        self._seen[device.key] = (device, time.monotonic())
        if (seen is None or time.monotonic() - seen[1] > SEEN_SECONDS) and device.key in self._bus.pending:
            self._spawn(self._deliver(device, again=True))

    def _word(self, message: dict[str, Any]) -> None:
        key = message.get("device", "")
        if "attributes" in message or "deleted" in message:
            update = shared_update(message.get("attributes", {}), message.get("deleted", []))
            self._publish(f"devices/{key}/attributes/updates", orjson.dumps(update))
        seen = self._seen.get(key)
        if message.get("commands") and seen is not None and time.monotonic() - seen[1] <= SEEN_SECONDS:
            self._spawn(self._deliver(seen[0], again=False))

    def _spawn(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, device: DeviceIdentity, *, again: bool) -> None:
        try:
            for command in await commands_taken(device, again=again, delivered=False):
                self._publish(
                    f"devices/{device.key}/rpc/request/{command.id}", orjson.dumps(command_for_device(command))
                )
        except Exception:
            logger.warning(
                "bridge: commands for %s not handed; they wait for its next message", device.key, exc_info=True
            )

    async def handle(self, device: DeviceIdentity, kind: str, ident: str, payload: bytes) -> None:
        """One control message, done (raises IngestError: refused)."""
        try:
            body = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            raise IngestError(ErrorCode.MALFORMED_JSON, "the payload is JSON") from None
        try:
            if kind == "attributes":
                await client_attributes_report(device, body)
            elif kind == "attributes_request":
                asked = body if isinstance(body, dict) else {}
                keys = [asked.get(n) for n in ("clientKeys", "sharedKeys")]
                answer = await attributes_asked(device, *[_keys(k) for k in keys])
                self._publish(f"devices/{device.key}/attributes/response/{ident}", orjson.dumps(answer))
            elif kind == "rpc_response":
                if not ident.isdigit() or not await command_reply(self._bus, device, int(ident), body):
                    raise IngestError("unknown_command", f"no command {ident} waits for this device")
            else:
                result = await device_call(device, body)
                self._publish(f"devices/{device.key}/call/response/{ident}", orjson.dumps(result))
        except ControlRefused as refused:
            raise IngestError(refused.code, refused.message, key=refused.key) from None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _keys(value: object) -> list[str] | None:
    """ThingsBoard's keys: a list, or a comma-separated text."""
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    if isinstance(value, list):
        return [k for k in value if isinstance(k, str)]
    return None
