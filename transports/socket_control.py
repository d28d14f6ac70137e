"""Attributes and commands on a device's WebSocket (docs/commands.md). The hub sends `{"rpc": {id, method,
params}}` (a command: answer `{"$rpc": {"id": N, "response": ...}}`, or for a one-way one confirm it with
`{"$rpc": {"id": N}}`), `{"attributes": {...shared changes, "deleted"?: [...]}}`, `{"attributes_response": ...}`
and `{"call_response": ...}`. The device sends control frames, each one JSON object with one `$` key:
`$attributes` (its client attributes), `$attributes_request`, `$rpc` and `$call`; each is acknowledged in turn
with the telemetry frames around it (`{"ack": N}` once done), or refused with an error frame."""

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
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

SendJson = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]
FRAMES = ("$attributes", "$attributes_request", "$rpc", "$call")


def is_control(text: str) -> bool:
    """A control frame, not telemetry: telemetry keys never start with `$` (ingest/parsing.py)."""
    return text.lstrip().startswith('{"$')


class SocketControl:
    """One device socket's side of attributes and commands: its control frames, and word from the bus."""

    def __init__(self, bus: ControlBus, device: DeviceIdentity, send: SendJson) -> None:
        self.bus, self.device, self.send = bus, device, send
        self._delivering: asyncio.Task[None] | None = None
        self._again = False  # word came while delivering: look once more
        self._pushes: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        self.bus.listen(self.device.key, self._word)
        if self.device.key in self.bus.pending:
            self._deliver(again=True)  # what was handed before and not confirmed, once more, and what is queued

    async def close(self) -> None:
        self.bus.unlisten(self.device.key, self._word)
        tasks = [t for t in (self._delivering, *self._pushes) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _word(self, message: dict[str, Any]) -> None:
        if message.get("commands"):
            self._deliver(again=False)
        if "attributes" in message or "deleted" in message:
            update = shared_update(message.get("attributes", {}), message.get("deleted", []))
            self._push({"attributes": update})

    def _push(self, payload: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.send(payload))
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    def _deliver(self, *, again: bool) -> None:
        if self._delivering is not None and not self._delivering.done():
            self._again = True
            return
        self._delivering = asyncio.get_running_loop().create_task(self._deliveries(again))

    async def _deliveries(self, again: bool) -> None:
        while True:
            self._again = False
            for command in await commands_taken(self.device, again=again, delivered=False):
                await self.send({"rpc": command_for_device(command)})
            if not self._again:
                return
            again = False

    async def frame(self, text: str) -> None:
        """One control frame, done (raises IngestError: refused, final)."""
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise IngestError(ErrorCode.MALFORMED_JSON, "a control frame is one JSON object") from None
        if not isinstance(message, dict) or len(message) != 1 or next(iter(message)) not in FRAMES:
            raise IngestError(ErrorCode.INVALID_SHAPE, f"a control frame is one of {', '.join(FRAMES)}: {{...}}")
        ((name, body),) = message.items()
        try:
            await getattr(self, "_" + name[1:])(body)
        except ControlRefused as refused:
            raise IngestError(refused.code, refused.message, key=refused.key) from None

    async def _attributes(self, body: object) -> None:
        await client_attributes_report(self.device, body)

    async def _attributes_request(self, body: object) -> None:
        asked = _object(body, '{"id": 1, "clientKeys": [...], "sharedKeys": [...]}')
        keys = {name: asked.get(name) for name in ("clientKeys", "sharedKeys")}
        if not all(v is None or (isinstance(v, list) and all(isinstance(k, str) for k in v)) for v in keys.values()):
            raise IngestError(ErrorCode.INVALID_SHAPE, "clientKeys and sharedKeys are lists of keys")
        answer = await attributes_asked(self.device, keys["clientKeys"], keys["sharedKeys"])
        await self.send({"attributes_response": {"id": asked.get("id"), **answer}})

    async def _rpc(self, body: object) -> None:
        reply = _object(body, '{"id": N, "response": ...} (or {"id": N}: received)')
        command_id = reply.get("id")
        if not isinstance(command_id, int) or isinstance(command_id, bool):
            raise IngestError(ErrorCode.INVALID_SHAPE, "id: the command's id, a number")
        if not await command_reply(self.bus, self.device, command_id, reply.get("response")):
            raise IngestError("unknown_command", f"no command {command_id} waits for this device")

    async def _call(self, body: object) -> None:
        call = _object(body, '{"id": 1, "method": "getCurrentTime", "params": {}}')
        result = await device_call(self.device, call)
        await self.send({"call_response": {"id": call.get("id"), "result": result}})


def _object(body: object, shape: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise IngestError(ErrorCode.INVALID_SHAPE, f"send {shape}")
    return body
