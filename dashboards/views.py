"""Operator pages (login required)."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render, resolve_url
from django.urls import reverse
from django.utils import timezone

from alerts.selectors import alert_events_recent, alert_thresholds_for_device, firing_on_device
from core.epoch import epoch_ms, from_epoch_ms
from core.protocol import close_codes
from dashboards.selectors import fleet_status
from devices.models import Device
from ingest.selectors import keys_of_device, readings_latest, readings_recent


@login_required
def fleet(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboards/fleet.html", {"fleet": fleet_status(), "close_codes": close_codes()})


@login_required
def fleet_json(request: HttpRequest) -> JsonResponse:
    """The fleet page's periodic refresh (statuses, rates, alerts, new devices)."""
    return JsonResponse(fleet_status())


# The device page's history windows (`?window=`): a fixed few, so no page loads an unbounded history.
HISTORY_WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6)}
POINTS_PER_CHART = 5_000  # newest points a chart keeps, from the history and live alike
MAX_CHARTS = 24  # keys drawn when none are picked and the device has more


@login_required
def device_detail(request: HttpRequest, key: str) -> HttpResponse:
    """Live charts of the picked numeric keys (`?key=`, repeatable; all by default) over `?window=`, and the
    latest text values; dashboards/static/dashboards/device.js follows the stream from there."""
    device = get_object_or_404(Device, key=key)
    window = request.GET.get("window", "15m")
    if window not in HISTORY_WINDOWS:
        window = "15m"
    known = keys_of_device(device.id)
    asked = set(request.GET.getlist("key"))
    picked = [k for k in known if k in asked] or (known[:MAX_CHARTS] if len(known) > MAX_CHARTS else [])
    start = timezone.now() - HISTORY_WINDOWS[window]
    page = {
        "device": device.key,
        "keys": picked,  # empty: every numeric key, including keys first seen live
        "start": epoch_ms(start),
        "points": POINTS_PER_CHART,
        "catchup": settings.HUB_STREAM_CATCHUP_LIMIT,
        "latest": reverse("telemetry-latest", args=[device.key]),
        "login": resolve_url(settings.LOGIN_URL),
        "history": readings_recent(device_id=device.id, since=start, keys=picked),
        "thresholds": alert_thresholds_for_device(device_id=device.id, device_key=device.key),
        "alerts": alert_events_recent(device_id=device.id, limit=20),
        "firing": firing_on_device(device_id=device.id),
    }
    texts = [
        {"key": k, "ts": v["ts"], "value": v["value"], "at": from_epoch_ms(v["ts"])}
        for k, v in readings_latest(device.id).items()
        if isinstance(v["value"], str)
    ]
    context = {"device": device, "page": page, "keys": known, "picked": picked, "texts": texts}
    context["close_codes"] = close_codes()
    return render(request, "dashboards/device.html", {**context, "window": window, "windows": HISTORY_WINDOWS})
