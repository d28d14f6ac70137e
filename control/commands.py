"""Commands (server-side RPC) for devices: created bounded, handed to the device at least once (ids let it drop a
repeat), answered once, and ended by their deadline. Every transport and the operator API go through here.

States: queued → sent (handed to the transport) → delivered (the device has it; a one-way command ends here)
→ successful or failed (a two-way command's response). A command not delivered by `expires_at` is expired; a
two-way one delivered but unanswered `timeout_ms` after delivery (or by `expires_at`, when not persistent) is
timed out."""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from control.models import Command
from control.refusals import ControlRefused
from core.epoch import epoch_ms
from devices.models import Device

State = Command.State
OPEN = (State.QUEUED, State.SENT, State.DELIVERED)  # not final (DELIVERED is final for a one-way command)
_METHOD = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")


class CommandRefused(ControlRefused):
    """Not queued: `field` names what is wrong; `status` is the HTTP status that says so."""

    def __init__(self, field: str, message: str, *, status: int = 400, code: str = "invalid") -> None:
        super().__init__(code, message)
        self.field, self.status = field, status


@dataclass(frozen=True, slots=True)
class CommandAsk:
    """What an operator asks: `timeout_ms` bounds the wait for the device's response (and, for a command that is
    not persistent, its delivery too); a persistent one waits for its device until `expires_at`."""

    method: str
    params: object = None
    two_way: bool = True
    persistent: bool = False
    timeout_ms: int = 10_000
    expires_at: datetime | None = None


def command_checked(ask: CommandAsk) -> CommandAsk:
    if not _METHOD.fullmatch(ask.method):
        raise CommandRefused("method", "1-128 letters, digits or _ . : / -")
    limit = settings.HUB_COMMAND_MAX_BYTES
    if len(orjson.dumps(ask.params)) > limit:
        raise CommandRefused("params", f"at most {limit} bytes of JSON")
    longest = settings.HUB_COMMAND_TIMEOUT_MAX_SECONDS * 1000
    if not 100 <= ask.timeout_ms <= longest:
        raise CommandRefused("timeout", f"between 100 and {longest} ms")
    if ask.expires_at is not None and not ask.persistent:
        raise CommandRefused("expirationTime", "only a persistent command waits for its device")
    if ask.expires_at is not None and ask.expires_at <= timezone.now():
        raise CommandRefused("expirationTime", "already past")
    return ask


def command_create(*, device_id: int, ask: CommandAsk, by: str) -> Command:
    """Queue a command (raises CommandRefused: invalid, or 429 when the device has too many open)."""
    ask = command_checked(ask)
    now = timezone.now()
    if ask.persistent:
        expires = ask.expires_at or now + timedelta(seconds=settings.HUB_COMMAND_PERSISTENT_SECONDS)
    else:
        expires = now + timedelta(milliseconds=ask.timeout_ms)
    with transaction.atomic():
        # The device's row locked: two concurrent creates cannot both pass the bound.
        Device.objects.select_for_update().filter(id=device_id).first()
        limit = settings.HUB_COMMANDS_MAX_OPEN
        if commands_open(device_id).count() >= limit:
            raise CommandRefused("device", f"{limit} commands are waiting for this device", status=429,
                                 code="too_many_commands")  # fmt: skip
        return Command.objects.create(
            device_id=device_id, method=ask.method, params=ask.params, two_way=ask.two_way,
            persistent=ask.persistent, created_at=now, expires_at=expires, timeout_ms=ask.timeout_ms, created_by=by,
        )  # fmt: skip


def commands_open(device_id: int):
    """A device's commands not yet ended."""
    unanswered = Q(state=State.DELIVERED, two_way=True)
    return Command.objects.filter(device_id=device_id).filter(Q(state__in=(State.QUEUED, State.SENT)) | unanswered)


def devices_with_open_commands() -> list[str]:
    """The keys of devices with commands not yet ended (a process's starting point: control/bus.py `pending`)."""
    return list(
        Command.objects.filter(Q(state__in=(State.QUEUED, State.SENT)) | Q(state=State.DELIVERED, two_way=True))
        .values_list("device__key", flat=True)
        .distinct()
    )


def commands_due(device_id: int, *, again: bool = False, limit: int | None = None) -> list[Command]:
    """What to hand the device now, oldest first: queued commands; with `again` (a device that just connected)
    also those handed before and not confirmed or answered (at least once: the device drops a repeat by id)."""
    states = (State.QUEUED, State.SENT) if again else (State.QUEUED,)
    due = Q(state__in=states)
    if again:
        due |= Q(state=State.DELIVERED, two_way=True)
    rows = Command.objects.filter(due, device_id=device_id, expires_at__gt=timezone.now())
    return list(rows.order_by("id")[: limit or settings.HUB_COMMANDS_MAX_OPEN])


def commands_handed(ids: Iterable[int], *, delivered: bool) -> None:
    """Handed to the transport; `delivered` when handing it is the receipt (an HTTP long-poll's answer)."""
    now = timezone.now()
    with transaction.atomic():
        for command in Command.objects.select_for_update().filter(id__in=list(ids), state__in=OPEN):
            command.attempts, command.sent_at = command.attempts + 1, now
            if delivered:
                _delivered(command, now)
            elif command.state == State.QUEUED:
                command.state = State.SENT
            command.save(update_fields=["attempts", "sent_at", "state", "delivered_at", "answer_by"])


def _delivered(command: Command, now: datetime) -> None:
    if command.state in (State.QUEUED, State.SENT):
        command.state, command.delivered_at = State.DELIVERED, now
        if command.two_way:  # a persistent command's response is awaited from its delivery on
            waited = now + timedelta(milliseconds=command.timeout_ms)
            command.answer_by = waited if command.persistent else command.expires_at


def command_received(*, device_id: int, command_id: int) -> bool:
    """The device confirms it has the command (MQTT's PUBACK, a WebSocket receipt)."""
    with transaction.atomic():
        command = Command.objects.select_for_update().filter(id=command_id, device_id=device_id).first()
        if command is None or command.state not in (State.QUEUED, State.SENT):
            return False
        _delivered(command, timezone.now())
        command.save(update_fields=["state", "delivered_at", "answer_by"])
    return True


def command_answered(*, device_id: int, command_id: int, response: object) -> Command | None:
    """The device's response to a two-way command: successful, or failed when it is `{"error": ...}`. None when
    there is no such open command of this device (an unknown id, a second answer, a one-way command)."""
    limit = settings.HUB_COMMAND_MAX_BYTES
    if len(orjson.dumps(response)) > limit:
        raise CommandRefused("response", f"at most {limit} bytes of JSON", status=413, code="too_large")
    failed = isinstance(response, dict) and set(response) == {"error"}
    now = timezone.now()
    with transaction.atomic():
        command = (
            Command.objects.select_for_update()
            .filter(id=command_id, device_id=device_id, two_way=True, state__in=OPEN)
            .first()
        )
        if command is None:
            return None
        command.state = State.FAILED if failed else State.SUCCESSFUL
        command.response, command.answered_at = response, now
        command.delivered_at = command.delivered_at or now
        command.save(update_fields=["state", "response", "answered_at", "delivered_at"])
    return command


def commands_ended(now: datetime | None = None) -> list[Command]:
    """End what is past its deadline: never delivered by `expires_at` → expired; delivered two-way commands
    unanswered by `answer_by` → timed out. The ended commands (their waiters are told)."""
    now = now or timezone.now()
    undelivered = Q(state__in=(State.QUEUED, State.SENT), expires_at__lte=now)
    unanswered = Q(state=State.DELIVERED, two_way=True, answer_by__lte=now)
    if not Command.objects.filter(undelivered | unanswered).exists():
        return []  # the usual answer, each second, without a transaction (or its locks) for nothing
    with transaction.atomic():
        ended = list(Command.objects.select_for_update(skip_locked=True).filter(undelivered | unanswered)[:1000])
        for command in ended:
            _ended(command)
        Command.objects.bulk_update(ended, ["state"])
    return ended


def command_end(command_id: int) -> Command | None:
    """End one command at its caller's deadline (as the sweep would a moment later); None if it is gone."""
    with transaction.atomic():
        command = Command.objects.select_for_update().filter(id=command_id).first()
        if command is not None and not command_final(command):
            _ended(command)
            command.save(update_fields=["state"])
    return command


def _ended(command: Command) -> None:
    # Handed to a device that never confirmed it, while its caller waited: timed out, as one it never answered.
    handed = command.state == State.SENT and not command.persistent
    command.state = State.TIMED_OUT if command.state == State.DELIVERED or handed else State.EXPIRED


def command_final(command: Command) -> bool:
    """Nothing more will happen to it (a one-way command once delivered)."""
    return command.state not in OPEN or (command.state == State.DELIVERED and not command.two_way)


def command_now(command_id: int) -> Command | None:
    """The command as stored now (None: gone with its device)."""
    return Command.objects.filter(id=command_id).first()


def command_summary(command: Command) -> dict[str, object]:
    def ms(at: datetime | None) -> int | None:
        return epoch_ms(at) if at is not None else None

    return {
        "id": command.id, "method": command.method, "params": command.params, "two_way": command.two_way,
        "persistent": command.persistent, "state": command.state, "response": command.response,
        "created_at": ms(command.created_at), "expires_at": ms(command.expires_at), "timeout": command.timeout_ms,
        "sent_at": ms(command.sent_at), "delivered_at": ms(command.delivered_at),
        "answered_at": ms(command.answered_at), "answer_by": ms(command.answer_by), "attempts": command.attempts,
        "created_by": command.created_by,
    }  # fmt: skip


def command_for_device(command: Command) -> dict[str, object]:
    """What the device is handed (ThingsBoard's shape: id, method, params)."""
    return {"id": command.id, "method": command.method, "params": command.params}
