"""Attributes of a device: validated and bounded here, for every transport and the operator API alike.

Values are any JSON (a number, text, a boolean, an object, a list); keys follow the telemetry key grammar. A
device keeps at most HUB_ATTRIBUTES_MAX_PER_SCOPE of each scope, each value at most HUB_ATTRIBUTE_MAX_BYTES."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from control.models import Attribute
from control.refusals import ControlRefused
from core.keys import is_key

Scope = Attribute.Scope


class AttributesRefused(ControlRefused):
    """Nothing was changed: `field` names the key (or the body) at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("invalid_attributes", message, key=field)
        self.field = field


@dataclass(frozen=True, slots=True)
class AttributeChange:
    """What changed on one device in one scope: the values set and the keys deleted."""

    device_id: int
    scope: str
    values: dict[str, object]
    deleted: list[str]


def attributes_checked(values: object) -> dict[str, object]:
    """A JSON object of attributes, checked (raises AttributesRefused)."""
    if not isinstance(values, Mapping) or not values:
        raise AttributesRefused("body", 'send a JSON object of attributes, e.g. {"firmware": "1.2.0"}')
    limit = settings.HUB_ATTRIBUTE_MAX_BYTES
    for key, value in values.items():
        if not isinstance(key, str) or not is_key(key):
            raise AttributesRefused(str(key)[:64], "a key is 1-64 letters, digits, '_', '.' or '-'")
        if len(orjson.dumps(value)) > limit:
            raise AttributesRefused(key, f"a value is at most {limit} bytes of JSON")
    return dict(values)


def keys_checked(keys: Iterable[str]) -> list[str]:
    found = [key for key in keys if key]
    if bad := next((key for key in found if not is_key(key)), None):
        raise AttributesRefused(bad[:64], "a key is 1-64 letters, digits, '_', '.' or '-'")
    return found


def attributes_set(*, device_id: int, scope: str, values: object, by: str) -> AttributeChange:
    """Upsert these attributes (raises AttributesRefused: bad values, or past the device's bound)."""
    checked = attributes_checked(values)
    now = timezone.now()
    with transaction.atomic():
        present = set(
            Attribute.objects.select_for_update().filter(device_id=device_id, scope=scope).values_list("key", flat=True)
        )
        limit = settings.HUB_ATTRIBUTES_MAX_PER_SCOPE
        if len(present | checked.keys()) > limit:
            raise AttributesRefused("body", f"a device keeps at most {limit} {scope} attributes")
        Attribute.objects.bulk_create(
            [
                Attribute(device_id=device_id, scope=scope, key=key, value=value, updated_at=now, updated_by=by)
                for key, value in checked.items()
            ],  # fmt: skip
            update_conflicts=True,
            unique_fields=["device", "scope", "key"],
            update_fields=["value", "updated_at", "updated_by"],
        )
    return AttributeChange(device_id, scope, checked, [])


def attributes_delete(*, device_id: int, scope: str, keys: Iterable[str]) -> AttributeChange:
    """Delete these attributes (absent ones are ignored); what was deleted."""
    wanted = keys_checked(keys)
    with transaction.atomic():
        rows = Attribute.objects.filter(device_id=device_id, scope=scope, key__in=wanted)
        deleted = sorted(rows.values_list("key", flat=True))
        rows.delete()
    return AttributeChange(device_id, scope, {}, deleted)


def attributes_of(device_id: int, scope: str, keys: Iterable[str] | None = None) -> dict[str, object]:
    """A device's attributes of one scope (only `keys`, when given)."""
    rows = Attribute.objects.filter(device_id=device_id, scope=scope)
    if keys is not None:
        rows = rows.filter(key__in=keys_checked(keys))
    return dict(rows.order_by("key").values_list("key", "value"))


def attributes_listed(device_id: int) -> dict[str, list[dict[str, object]]]:
    """Every attribute of a device by scope, with who changed it and when (the device page, the API)."""
    listed: dict[str, list[dict[str, object]]] = {scope: [] for scope in Scope.values}
    for row in Attribute.objects.filter(device_id=device_id).order_by("scope", "key"):
        listed[row.scope].append(
            {
                "key": row.key,
                "value": row.value,
                "updated_at": int(row.updated_at.timestamp() * 1000),
                "updated_by": row.updated_by,
            }  # fmt: skip
        )
    return listed
