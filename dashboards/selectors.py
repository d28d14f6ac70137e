"""Read-side queries for the dashboards: compositions of the readings selectors (ingest/selectors.py),
the device registry, open alerts, and devices' attributes and commands."""

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import orjson
from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from alerts.selectors import SEVERITY_ORDER, alerts_open_by_device
from control.models import Attribute, Command
from core.epoch import epoch_ms
from devices.labels import devices_labelled
from devices.models import Device
from history.selectors import keys_of_devices, latest_wire_by_device, readings_per_minute

FLEET_SORTS = ("status", "seen", "rate", "name")
FLEET_STATUSES = ("alerting", "online", "offline", "never")
FLEET_PAGE_ROWS = 100
COMPARE_MAX_DEVICES = 20  # each is one live stream of the page
COMPARE_DEFAULT_KEYS = 4


@dataclass(frozen=True, slots=True)
class FleetQuery:
    """Which devices the fleet page shows: text (key or name), labels, an attribute, a status, an order and a
    page."""

    text: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    attribute: tuple[str, str] | None = None  # (name, value as text): any scope's attribute of that name reads so
    status: str = ""  # one of FLEET_STATUSES, or "" for all
    sort: str = "status"  # one of FLEET_SORTS
    descending: bool = False
    page: int = 1  # 1-based
    rows: int = FLEET_PAGE_ROWS


def _status(seen_ms: int | None, now: int, window: int) -> str:
    if seen_ms is None:
        return "never"
    return "online" if now - seen_ms <= window else "offline"


def _sort_key(sort: str, device: dict) -> tuple:
    name = (device["name"].lower(), device["key"])
    if sort == "seen":
        return (-(device["seen"] or 0), *name)  # newest first
    if sort == "rate":
        return (-device["per_minute"], *name)  # busiest first
    if sort == "status":
        severity = SEVERITY_ORDER.get(device["alert"], len(SEVERITY_ORDER))
        return (severity, FLEET_STATUSES.index(device["status"]), *name)  # worst alert, then online, offline
    return name


def fleet_status(query: FleetQuery | None = None, *, fleet: QuerySet[Device] | None = None) -> dict:
    """One page of the fleet (`query`) among `fleet` (the devices the viewer sees; default: all): each device's
    status, last seen, readings in the last minute, newest value per key and worst firing alert, with counts by
    status over every matching device. A fixed number of queries whatever the fleet's size; latest values are
    read for the page's devices only."""
    query = query or FleetQuery()
    fleet = Device.objects.all() if fleet is None else fleet
    now = timezone.now()
    now_ms, window = epoch_ms(now), settings.HUB_ONLINE_WINDOW_SECONDS * 1000
    total = fleet.count()
    matching = devices_labelled(fleet, query.labels)
    if query.attribute is not None:
        matching = devices_with_attribute(matching, *query.attribute)
    if query.text:
        matching = matching.filter(Q(key__icontains=query.text) | Q(name__icontains=query.text))
    alerts = alerts_open_by_device()
    per_minute = readings_per_minute(since=now - timedelta(minutes=1))
    devices = []
    for device_id, key, name, last_seen, labels in matching.values_list("id", "key", "name", "last_seen", "labels"):
        seen = epoch_ms(last_seen) if last_seen else None
        alert = alerts.get(device_id)
        device = {"id": device_id, "key": key, "name": name or key, "seen": seen, "labels": labels, "alert": alert}
        device["status"] = _status(seen, now_ms, window)
        device["per_minute"] = per_minute.get(device_id, 0)
        devices.append(device)
    counts = {status: 0 for status in FLEET_STATUSES}
    for device in devices:
        counts[device["status"]] += 1
        counts["alerting"] += device["alert"] is not None
    if query.status == "alerting":
        devices = [d for d in devices if d["alert"] is not None]
    elif query.status:
        devices = [d for d in devices if d["status"] == query.status]
    devices.sort(key=lambda d: _sort_key(query.sort, d), reverse=query.descending)
    pages = max(1, -(-len(devices) // query.rows))
    page = min(max(query.page, 1), pages)
    shown = devices[(page - 1) * query.rows : page * query.rows]
    latest = latest_wire_by_device(device_ids=[d["id"] for d in shown])
    for device in shown:
        device["latest"] = dict(sorted(latest.get(device.pop("id"), {}).items()))
    return {
        "now": now_ms,
        "online_window": window,
        "total": total,
        "matched": len(devices),
        "counts": counts,
        "page": page,
        "pages": pages,
        "devices": shown,
    }


def devices_with_attribute(devices: QuerySet[Device], name: str, text: str) -> QuerySet[Device]:
    """The devices of `devices` with an attribute `name` (client, shared or server) whose value reads `text`: a
    JSON string by its text, a number, boolean or object by its JSON text (`5` finds 5 and "5"). One subquery,
    compared in SQL: JSONField's exact lookup means the same on PostgreSQL and SQLite."""
    values = Q(value=text)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass  # plain text (1.2.0): only a JSON string can read so
    else:
        values |= Q(value=parsed)
    holders = Attribute.objects.filter(values, key=name).values("device_id")
    return devices.filter(id__in=holders)


def commands_recent(device_id: int, *, limit: int = 20) -> list[Command]:
    """A device's newest commands, newest first (the device page; its script then polls the API's list)."""
    return list(Command.objects.filter(device_id=device_id).order_by("-id")[:limit])


@dataclass(frozen=True, slots=True)
class CompareSelection:
    """What the compare view shows: the devices matching a key pattern and labels, and the keys to chart."""

    pattern: str
    labels: Mapping[str, str]
    keys: tuple[str, ...]
    devices: list[Device]
    matched: int  # devices matching, of which the first COMPARE_MAX_DEVICES are shown
    available: tuple[str, ...]  # numeric keys any matching device has reported


def compare_selection(
    *, pattern: str, labels: Mapping[str, str], keys: Sequence[str], fleet: QuerySet[Device] | None = None
) -> CompareSelection:
    """Devices whose key matches `pattern` (shell-style, comma-separated alternatives) and that carry `labels`;
    the asked keys they have reported, or by default the keys they all share (at most COMPARE_DEFAULT_KEYS).
    Nothing is selected until a pattern or a label is given; only devices of `fleet` (default: all)."""
    if not pattern and not labels:
        return CompareSelection(pattern, labels, (), [], 0, ())
    alternatives = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
    fleet = Device.objects.all() if fleet is None else fleet
    candidates = devices_labelled(fleet.order_by("key"), labels).only("id", "key", "name")
    matched = [d for d in candidates if any(fnmatch.fnmatchcase(d.key, p) for p in alternatives)]
    shown = matched[:COMPARE_MAX_DEVICES]
    reported = keys_of_devices([d.id for d in shown])
    if keys:
        chosen = tuple(k for k in keys if k in reported)
    else:
        chosen = tuple(k for k, n in reported.items() if n == len(shown))[:COMPARE_DEFAULT_KEYS]
    return CompareSelection(pattern, labels, chosen, shown, len(matched), tuple(reported))
