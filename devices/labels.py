"""Device labels: `name=value` pairs an operator gives a device (site=north, model=tx-200), and selectors over
them (`site=north,model=tx-200`: every pair must match). Stored as a JSON object on the device
(devices.models.Device.labels), validated by `labels_problems` on every write: `device_labels_set` in code,
`Device.clean` in forms (the admin)."""

import re
from collections.abc import Mapping

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.db.models.fields.json import KeyTextTransform

from devices.models import Device

MAX_LABELS = 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}")
_VALUE = re.compile(r"[^,=\x00-\x1f]{1,200}")

Labels = dict[str, str]


def labels_problems(labels: object) -> list[str]:
    """What is wrong with `labels` as a device's labels (empty when valid)."""
    if not isinstance(labels, Mapping):
        return ["labels are an object of name → value"]
    problems = []
    if len(labels) > MAX_LABELS:
        problems.append(f"at most {MAX_LABELS} labels")
    for name, value in labels.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problems.append(f"label name {name!r}: 1-63 letters, digits, '_', '.', '-', '/', starting with one")
        elif not isinstance(value, str) or value != value.strip() or not _VALUE.fullmatch(value):
            problems.append(f"label {name}: the value is 1-200 characters, no ',', '=' or control characters")
    return problems


def labels_parse(text: str) -> Labels:
    """`"site=north, model=tx-200"` → {"site": "north", "model": "tx-200"}; raises ValidationError naming
    the bad part. The text form of the admin, the fleet filter, the compare view and alert rules."""
    labels: Labels = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValidationError(f"{part!r} is not name=value")
        labels[name.strip()] = value.strip()
    if problems := labels_problems(labels):
        raise ValidationError(problems)
    return labels


def labels_from_query(text: str) -> tuple[Labels, str]:
    """A page's label filter: the labels, or none and what was wrong (pages show it instead of failing)."""
    try:
        return labels_parse(text), ""
    except ValidationError as exc:
        return {}, f"label filter ignored: {'; '.join(exc.messages)}"


def labels_text(labels: Mapping[str, str]) -> str:
    """The inverse of `labels_parse`, names sorted."""
    return ", ".join(f"{name}={labels[name]}" for name in sorted(labels))


def device_labels_set(*, key: str, labels: Mapping[str, str]) -> Device:
    """Replace a device's labels (validated first)."""
    if problems := labels_problems(labels):
        raise ValidationError(problems)
    device = Device.objects.get(key=key)
    device.labels = dict(labels)
    device.save(update_fields=["labels"])
    return device


def devices_labelled(devices: QuerySet[Device], selector: Mapping[str, str]) -> QuerySet[Device]:
    """The devices of `devices` carrying every `name=value` of `selector` (on PostgreSQL and SQLite alike)."""
    for i, (name, value) in enumerate(selector.items()):
        alias = f"_label_{i}"
        devices = devices.alias(**{alias: KeyTextTransform(name, "labels")}).filter(**{alias: value})
    return devices


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """The same test in Python (the alert engine's rule scope)."""
    return all(labels.get(name) == value for name, value in selector.items())
