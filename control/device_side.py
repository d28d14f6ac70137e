"""What a device does with attributes and commands, whatever its transport (WebSocket, HTTP, MQTT): report its
client attributes, ask for attributes, take its commands, answer them, and call the hub (client-side RPC)."""

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from control.attributes import Scope, attributes_of, attributes_set
from control.bus import ControlBus
from control.commands import (
    command_answered,
    command_final,
    command_now,
    command_received,
    commands_due,
    commands_handed,
)
from control.models import Command
from control.refusals import ControlRefused
from control.threads import db_call
from core.epoch import now_ms
from devices.services import DeviceIdentity


class CallRefused(ControlRefused):
    """A client-side call the hub does not answer: `code` and a message, for the device."""


# The methods a device may call on the hub (ThingsBoard's client-side RPC): name → its answer.
CALLS: dict[str, Callable[[DeviceIdentity, object], object]] = {
    "getCurrentTime": lambda device, params: {"time": now_ms()},
}


async def client_attributes_report(device: DeviceIdentity, values: object) -> None:
    """The device's own attributes (raises AttributesRefused)."""
    await db_call(attributes_set)(
        device_id=device.id,
        scope=Scope.CLIENT,
        values=values,
        by="device",
    )


async def attributes_asked(
    device: DeviceIdentity, client_keys: list[str] | None, shared_keys: list[str] | None
) -> dict[str, dict[str, object]]:
    """ThingsBoard's answer to an attribute request: `client` and `shared` (all of a scope when no keys are
    named at all; a scope with nothing to say is left out)."""

    def read() -> dict[str, dict[str, object]]:
        everything = client_keys is None and shared_keys is None
        answer = {}
        for scope, keys in ((Scope.CLIENT, client_keys), (Scope.SHARED, shared_keys)):
            if (everything or keys is not None) and (values := attributes_of(device.id, scope, keys)):
                answer[scope.value] = values
        return answer

    return await db_call(read)()


async def commands_taken(
    device: DeviceIdentity, *, again: bool, delivered: bool, limit: int | None = None
) -> list[Command]:
    """The device's due commands (at most `limit`), marked handed (`again`: a device that just connected gets what
    it was handed before and did not confirm, once more; `delivered`: handing them is the receipt)."""

    def take() -> list[Command]:
        due = commands_due(device.id, again=again, limit=limit)
        commands_handed([c.id for c in due], delivered=delivered)
        return due

    return await db_call(take)()


async def commands_told(bus: ControlBus, commands: list[Command]) -> None:
    """Word to the callers of one-way commands that handing them delivered them."""
    for command in commands:
        if not command.two_way:
            await bus.ended(command.id)


async def command_reply(bus: ControlBus, device: DeviceIdentity, command_id: int, response: object) -> bool:
    """The device's response to a two-way command (or, with `response` None, its receipt of any command). False
    when it has no such open command: an unknown id, or a second answer."""
    if response is None:
        if not await db_call(command_received)(device_id=device.id, command_id=command_id):
            return False
        command = await db_call(command_now)(command_id)
        if command is not None and command_final(command):
            await bus.ended(command_id)
        return True
    answered = await db_call(command_answered)(device_id=device.id, command_id=command_id, response=response)
    if answered is None:
        return False
    await bus.ended(command_id)
    return True


async def device_call(device: DeviceIdentity, request: object) -> object:
    """A client-side call `{"method", "params"}`: the hub's answer (raises CallRefused)."""
    if not isinstance(request, Mapping) or not isinstance(request.get("method"), str):
        raise CallRefused("invalid", 'send {"method": "...", "params": {...}}')
    answer = CALLS.get(request["method"])
    if answer is None:
        raise CallRefused("unknown_method", f"the hub answers {', '.join(sorted(CALLS))}")
    return answer(device, request.get("params"))


class Inbox:
    """One device connection's or long-poll's wake-ups from the bus: commands to take, shared attribute updates."""

    def __init__(self, bus: ControlBus, key: str) -> None:
        self.bus, self.key = bus, key
        self.commands = asyncio.Event()
        self.updates: list[dict[str, Any]] = []
        self.updated = asyncio.Event()

    def __enter__(self) -> "Inbox":
        self.bus.listen(self.key, self.take)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bus.unlisten(self.key, self.take)

    def take(self, message: dict[str, Any]) -> None:
        if message.get("commands"):
            self.commands.set()
        if "attributes" in message or "deleted" in message:
            self.updates.append(shared_update(message.get("attributes", {}), message.get("deleted", [])))
            self.updated.set()

    def updates_taken(self) -> list[dict[str, Any]]:
        taken, self.updates = self.updates, []
        self.updated.clear()
        return taken


def shared_update(values: Mapping[str, object], deleted: list[str]) -> dict[str, Any]:
    """ThingsBoard's attribute update: the changed shared attributes, and `deleted` when some were."""
    update: dict[str, Any] = dict(values)
    if deleted:
        update["deleted"] = list(deleted)
    return update
