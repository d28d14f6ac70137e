"""Operator pages (for every role; accounts/policy.py): the live device page and the compare view. The fleet page is in
dashboards/fleet_page.py, the history page in dashboards/history_page.py."""

from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render, resolve_url
from django.urls import reverse

from accounts.policy import Action
from accounts.requests import actor_in, allowed
from alerts.selectors import alert_events_recent, alert_thresholds_for_device, firing_on_device
from core.epoch import from_epoch_ms, now_ms
from core.protocol import close_codes
from dashboards.selectors import compare_selection
from devices.labels import labels_from_query, labels_text
from history.selectors import keys_of_device, readings_latest

# The live pages' windows (`?window=`): a fixed few; longer ranges belong to the history page.
LIVE_WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6)}
MAX_CHARTS = 24  # keys drawn when none are picked and the device has more


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
    and the latest text values; dashboards/static/dashboards/device.js loads the window and follows the stream."""
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
    return render(request, "dashboards/device.html", context)


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
