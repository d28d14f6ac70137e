"""Operator pages (for every role; accounts/policy.py): the live device page and the compare view. The fleet page is in
dashboards/fleet_page.py, the history page in dashboards/history_page.py."""

from datetime import timedelta
from typing import cast

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render, resolve_url
from django.urls import reverse

from accounts.policy import Action
from accounts.requests import actor_in, allowed
from alerts.selectors import alert_events_recent, alert_thresholds_for_device, firing_on_device
from control.attributes import Scope, attributes_listed
from control.commands import command_summary
from control.models import Command
from core.epoch import epoch_ms, from_epoch_ms, now_ms
from core.protocol import close_codes
from dashboards.selectors import commands_recent, compare_selection
from devices.labels import labels_from_query, labels_text
from history.selectors import keys_of_device, readings_latest

# The live pages' windows (`?window=`): a fixed few; longer ranges belong to the history page.
LIVE_WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6)}
MAX_CHARTS = 24  # keys drawn when none are picked and the device has more
COMMAND_ROWS = 20  # the device page's recent commands (control.js polls as many)
JSON_SHORT = 60  # characters of a JSON value in a table cell; the whole is in a <details> (control.js agrees)
ATTRIBUTE_SCOPES = {
    Scope.CLIENT: "reported by the device",
    Scope.SHARED: "set here, delivered to the device",
    Scope.SERVER: "set here, never sent to the device",
}


def live_window(request: HttpRequest) -> str:
    window = request.GET.get("window", "15m")
    return window if window in LIVE_WINDOWS else "15m"


def _live_config(window: str) -> dict:
    """What every live page's script needs besides its own choices."""
    return {
        "window": int(LIVE_WINDOWS[window].total_seconds() * 1000),
        "now": now_ms(),
        "catchup": settings.HUB_STREAM_CATCHUP_LIMIT,
        "login": resolve_url(settings.LOGIN_URL),
    }


@allowed(Action.VIEW)
def device_detail(request: HttpRequest, key: str) -> HttpResponse:
    """Live charts of the picked numeric keys (`?key=`, repeatable; all by default) over the whole `?window=`,
    the latest text values, the device's attributes and recent commands; dashboards/static/dashboards/device.js
    loads the window and follows the stream, control.js changes attributes and sends commands (operators)."""
    device = get_object_or_404(actor_in(request).devices(), key=key)  # out of scope: as unknown
    window = live_window(request)
    known = keys_of_device(device.id)
    asked = set(request.GET.getlist("key"))
    picked = [k for k in known if k in asked] or (known[:MAX_CHARTS] if len(known) > MAX_CHARTS else [])
    page = {
        **_live_config(window),
        "device": device.key,
        "keys": picked,  # empty: every numeric key, including keys first seen live
        "charted": picked or known,  # the keys whose window is loaded
        "api": reverse("telemetry-window", args=[device.key]),
        "csv": reverse("telemetry-csv", args=[device.key]),
        "latest": reverse("telemetry-latest", args=[device.key]),
        "thresholds": alert_thresholds_for_device(device_id=device.id, device_key=device.key, labels=device.labels),
        "alerts": alert_events_recent(device_id=device.id, limit=20),
        "firing": firing_on_device(device_id=device.id),
    }
    texts = [
        {"key": k, "ts": v["ts"], "value": v["value"], "at": from_epoch_ms(v["ts"])}
        for k, v in readings_latest(device.id).items()
        if isinstance(v["value"], str)
    ]
    context = {"device": device, "page": page, "keys": known, "picked": picked, "texts": texts}
    context |= {"close_codes": close_codes(), "window": window, "windows": LIVE_WINDOWS}
    return render(request, "dashboards/device.html", context | _control_context(device.id, device.key))


@allowed(Action.VIEW)
def compare(request: HttpRequest) -> HttpResponse:
    """Several devices side by side: `devices` (a key pattern, e.g. boiler-*), `label` (name=value pairs) and
    `keys` pick them; one chart per key, a trace per device, live over `window` (compare.js)."""
    window = live_window(request)
    labels, problem = labels_from_query(request.GET.get("label", ""))
    keys = [k.strip() for k in request.GET.get("keys", "").split(",") if k.strip()]
    pattern = request.GET.get("devices", "").strip()[:500]
    selection = compare_selection(pattern=pattern, labels=labels, keys=keys, fleet=actor_in(request).devices())
    page = {
        **_live_config(window),
        "devices": [{"key": d.key, "name": d.name or d.key} for d in selection.devices],
        "keys": list(selection.keys),
        "api": reverse("telemetry-window", args=["KEY"]),
        "csv": reverse("telemetry-csv", args=["KEY"]),
    }
    context = {"selection": selection, "page": page, "window": window, "windows": LIVE_WINDOWS, "problem": problem}
    context["label_text"] = labels_text(labels)
    return render(request, "dashboards/compare.html", context | {"close_codes": close_codes()})


def json_shown(value: object) -> dict[str, str]:
    """A JSON value as a table cell shows it: its text, shortened when long, and the whole, indented."""
    text = orjson.dumps(value).decode()
    short = text if len(text) <= JSON_SHORT else text[: JSON_SHORT - 1] + "…"
    return {"short": short, "whole": orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() if short != text else ""}


def time_shown(ms: int) -> dict[str, object]:
    """A time as the page renders it without JavaScript (UTC, named); control.js rewrites it in local time."""
    at = from_epoch_ms(ms)
    return {"ms": ms, "iso": at.isoformat(), "text": at.strftime("%Y-%m-%d %H:%M:%S UTC")}


def _attribute_row(attribute: dict[str, object]) -> dict[str, object]:
    return {
        **attribute,
        "value": json_shown(attribute["value"]),
        "updated": time_shown(cast(int, attribute["updated_at"])),
    }


def _command_row(command: Command) -> dict[str, object]:
    response = json_shown(command.response) if command.response is not None else None
    state = command.state.replace("_", " ")
    return {**command_summary(command), "state_text": state, "created": time_shown(epoch_ms(command.created_at)),
            "response": response}  # fmt: skip


def _control_context(device_id: int, key: str) -> dict[str, object]:
    """The device page's attributes (by scope) and recent commands, rendered; the API addresses control.js uses."""
    listed = attributes_listed(device_id)
    scopes = [
        {"name": scope.value, "note": note, "writable": scope != Scope.CLIENT,
         "rows": [_attribute_row(a) for a in listed[scope.value]]}
        for scope, note in ATTRIBUTE_SCOPES.items()
    ]  # fmt: skip
    control = {
        "attributes": reverse("api:device-attributes", args=[key]),
        "rpc": reverse("api:device-rpc", args=[key]),
        "rows": COMMAND_ROWS,
        "short": JSON_SHORT,
        "poll": 2000,  # ms between refreshes of the commands table while the page is visible
    }
    return {
        "attributes": listed,
        "attribute_scopes": scopes,
        "commands": [_command_row(c) for c in commands_recent(device_id, limit=COMMAND_ROWS)],
        "control": control,
        "command_timeout_max": settings.HUB_COMMAND_TIMEOUT_MAX_SECONDS * 1000,
    }
