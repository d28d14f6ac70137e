"""Device registry services: create (one or thousands at once), change, delete, rotate, authenticate."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Field

from devices.labels import labels_problems
from devices.models import Device
from devices.signals import credentials_changed
from devices.tokens import token_broker_hash, token_hash, token_new


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What a transport needs to know about an authenticated device."""

    id: int
    key: str
    token_hash: str = ""


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device to create: what an operator, an import file or a provisioning profile gives."""

    key: str
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one device of a batch was refused: its 1-based row, key, field and the reason. A `conflict` is a key
    that is taken (an existing device, or an earlier row of the same batch)."""

    row: int
    key: str
    field: str
    message: str
    conflict: bool = False


class DevicesRefused(Exception):
    """Nothing was created: every refused row is named."""

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"row {p.row} ({p.key!r}): {p.field}: {p.message}" for p in self.problems))

    @property
    def conflict(self) -> bool:
        """Every refusal is a taken key (HTTP 409), not an invalid value (400)."""
        return all(p.conflict for p in self.problems)


# Concrete columns (CharFields), not relations: what `get_field` may also answer.
_FIELDS = {name: cast("Field[Any, Any]", Device._meta.get_field(name)) for name in ("key", "name")}


def device_problems(**values: object) -> dict[str, str]:
    """Field -> what is wrong, for the given `key`, `name` and `labels` of a device (uniqueness aside): the
    model fields' own validators, without the per-row queries of `full_clean`."""
    problems = {}
    for name, value in values.items():
        if name == "labels":
            if found := labels_problems(value):
                problems[name] = "; ".join(found)
            continue
        try:
            _FIELDS[name].clean(value, None)
        except ValidationError as exc:
            problems[name] = " ".join(exc.messages)
    return problems


def devices_bulk_create(*, specs: Sequence[DeviceSpec]) -> list[tuple[Device, str]]:
    """Create every device of `specs` in one transaction, or none (DevicesRefused names each refused row);
    returns each with its plaintext token, the only time it is visible. Validation is per field, uniqueness
    one query: 10,000 devices in 2-3 s through the API (bench/provisioning.py)."""
    if problems := devices_bulk_problems(specs=specs):
        raise DevicesRefused(problems)
    tokens = [token_new() for _ in specs]
    devices = [
        Device(
            key=spec.key,
            name=spec.name,
            labels=dict(spec.labels),
            token_hash=token_hash(token),
            broker_hash=token_broker_hash(token),
        )
        for spec, token in zip(specs, tokens, strict=True)
    ]
    try:
        with transaction.atomic():
            Device.objects.bulk_create(devices, batch_size=2000)
    except IntegrityError:  # a concurrent create took one of the keys since the check
        raise DevicesRefused(_taken(specs) or [RowProblem(0, "", "key", "a key was taken meanwhile", True)]) from None
    _credentials_told(created={device.key: token for device, token in zip(devices, tokens, strict=True)})
    return list(zip(devices, tokens, strict=True))


def devices_bulk_problems(*, specs: Sequence[DeviceSpec]) -> list[RowProblem]:
    """Every refused row of `specs`, by row: invalid fields, keys repeated in the batch, keys taken."""
    problems: list[RowProblem] = []
    first_row: dict[str, int] = {}  # key -> the row it first appears in
    for row, spec in enumerate(specs, start=1):
        fields = device_problems(key=spec.key, name=spec.name, labels=spec.labels)
        problems += [RowProblem(row, spec.key, name, message) for name, message in fields.items()]
        if spec.key in first_row:
            message = f"the key {spec.key!r} repeats row {first_row[spec.key]}"
            problems.append(RowProblem(row, spec.key, "key", message, conflict=True))
        first_row.setdefault(spec.key, row)
    return sorted(problems + _taken(specs), key=lambda p: p.row)


def _taken(specs: Sequence[DeviceSpec]) -> list[RowProblem]:
    keys = {spec.key for spec in specs if isinstance(spec.key, str)}
    taken = set(Device.objects.filter(key__in=keys).values_list("key", flat=True)) if keys else set()
    return [
        RowProblem(row, spec.key, "key", f"a device with the key {spec.key!r} exists", conflict=True)
        for row, spec in enumerate(specs, start=1)
        if spec.key in taken
    ]


def device_create(*, key: str, name: str = "", labels: Mapping[str, str] | None = None) -> tuple[Device, str]:
    """Create a device; returns it with its plaintext token (the only time the token is visible). Raises
    DevicesRefused."""
    return devices_bulk_create(specs=[DeviceSpec(key, name, labels or {})])[0]


def device_update(*, key: str, name: str | None = None, labels: Mapping[str, str] | None = None) -> Device:
    """Change a device's name and/or labels (its key is its identity in topics and URLs: it never changes).
    Raises Device.DoesNotExist, or ValidationError naming the field."""
    changes = {name_: value for name_, value in (("name", name), ("labels", labels)) if value is not None}
    if problems := device_problems(**changes):
        raise ValidationError(problems)
    with transaction.atomic():
        device = Device.objects.select_for_update().get(key=key)
        for name_, value in changes.items():
            setattr(device, name_, dict(value) if isinstance(value, Mapping) else value)  # labels: a copy
        device.save(update_fields=list(changes))
    return device


def device_delete(*, key: str) -> None:
    """Delete a device with its readings, latest values and alert history; its token stops working (open
    sockets are closed by the token re-check, ingest/revocation.py). Raises Device.DoesNotExist."""
    deleted, _ = Device.objects.filter(key=key).delete()
    if not deleted:
        raise Device.DoesNotExist(key)
    _credentials_told(deleted=[key])


def device_token_rotate(*, key: str) -> str:
    """Issue a new token for a device; the old one stops working at once."""
    token = token_new()
    with transaction.atomic():
        device = Device.objects.select_for_update().get(key=key)
        device.token_hash = token_hash(token)
        device.broker_hash = token_broker_hash(token)
        device.save(update_fields=["token_hash", "broker_hash"])
    _credentials_told(created={key: token})
    return token


def device_issue_token(*, key: str, name: str = "") -> str:
    """A fresh token for `key`, creating the device if needed (demo and simulated devices: tokens are stored
    hashed, so a simulator that starts again needs new ones)."""
    if Device.objects.filter(key=key).exists():
        return device_token_rotate(key=key)
    return device_create(key=key, name=name)[1]


async def device_authenticate(*, token: str) -> DeviceIdentity | None:
    """The device owning this token, or None."""
    if not token or len(token) > 256:
        return None
    hashed = token_hash(token)
    row = await _device_row(token_hash=hashed)
    return DeviceIdentity(id=row[0], key=row[1], token_hash=hashed) if row else None


async def device_identity_by_key(*, key: str) -> DeviceIdentity | None:
    """The device registered under `key`, or None (MQTT topics name devices by key)."""
    row = await _device_row(key=key)
    return DeviceIdentity(id=row[0], key=row[1]) if row else None


def _credentials_told(*, created: Mapping[str, str] | None = None, deleted: Sequence[str] = ()) -> None:
    """Once the change commits (never for one rolled back), tell listeners (devices/signals.py)."""
    created, deleted = dict(created or {}), list(deleted)
    transaction.on_commit(lambda: credentials_changed.send(sender=Device, created=created, deleted=deleted))


@database_sync_to_async
def _device_row(**lookup: str) -> tuple[int, str] | None:
    # database_sync_to_async drops connections that broke (a database restart) before and after the query,
    # which long-lived sockets and background tasks need: no request cycle does it for them.
    return Device.objects.filter(**lookup).values_list("id", "key").first()
