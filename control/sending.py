"""What operators do: set a device's shared (delivered to it) or server attributes, and send it commands,
waiting for the outcome when it is not persistent."""

import asyncio
from collections.abc import Iterable, Mapping

from asgiref.sync import async_to_sync

from control.attributes import AttributeChange, Scope, attributes_delete, attributes_set
from control.bus import ControlBus
from control.commands import CommandAsk, command_create, command_end, command_final, command_now
from control.models import Command
from control.threads import db_call


def attributes_changed(
    bus: ControlBus, *, device_id: int, key: str, scope: str, values: Mapping[str, object] | None = None,
    deleted: Iterable[str] = (), by: str,
) -> AttributeChange:  # fmt: skip
    """Set or delete shared or server attributes (raises AttributesRefused); shared changes go to the device.
    Synchronous, for a view's thread: its own connection does the work (a second one, taken while the view's is
    held, could wait forever once every view of a busy process held one)."""
    if values:
        change = attributes_set(device_id=device_id, scope=scope, values=values, by=by)
    else:
        change = attributes_delete(device_id=device_id, scope=scope, keys=deleted)
    if scope == Scope.SHARED and (change.values or change.deleted):
        async_to_sync(bus.tell)(key, attributes=change.values, deleted=change.deleted)
    return change


def command_queued(bus: ControlBus, *, device_id: int, key: str, ask: CommandAsk, by: str) -> Command:
    """Queue a command and tell the device's process (raises CommandRefused). Synchronous, as above."""
    command = command_create(device_id=device_id, ask=ask, by=by)
    async_to_sync(bus.tell)(key, commands=True)
    return command


async def command_outcome(bus: ControlBus, command_id: int) -> Command | None:
    """Wait for a command to end (delivered, for a one-way one; answered, for a two-way one) or for its timeout,
    when it is ended here (timed out, or expired). None when its device was deleted meanwhile (with it)."""
    ended = bus.expect(command_id)  # registered before the database is read: no word slips between
    try:
        command = await db_call(command_now)(command_id)
        if command is None:
            return None
        deadline = asyncio.get_running_loop().time() + command.timeout_ms / 1000
        while not command_final(command) and (left := deadline - asyncio.get_running_loop().time()) > 0:
            # Word ends the wait at once; the database is asked each second in case word was lost.
            await asyncio.wait([ended], timeout=min(left, 1.0))
            command = await db_call(command_now)(command_id)
            if command is None:
                return None
    finally:
        bus.forget(command_id, ended)
    if command_final(command):
        return command
    return await db_call(command_end)(command_id)
