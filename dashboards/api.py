"""History API: `GET /api/v1/devices/<KEY>/telemetry` (JSON or CSV), `GET /api/v1/devices/<KEY>/latest` and
`GET /api/v1/devices/<KEY>/window` (a live chart's decimated window)."""

from django import forms
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from dashboards.auth import operator_of
from dashboards.forms import HistoryParams, WindowParams
from devices.models import Device
from ingest.selectors import (
    HistoryQuery,
    csv_stream,
    keys_of_device,
    readings_aggregate,
    readings_latest,
    readings_raw,
    readings_window,
    window_interval,
)


def _error(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


def _device_or_error(request: HttpRequest, key: str) -> Device | JsonResponse:
    if not operator_of(request).is_authenticated:
        return _error(401, "unauthorized", "log in or send Authorization: Bearer <api token>")
    device = Device.objects.filter(key=key).first()
    return device if device is not None else _error(404, "unknown_device", f"no device {key!r}")


def _asked(request: HttpRequest, key: str, form: forms.Form) -> tuple[Device, dict, list[str]] | JsonResponse:
    """The device, the valid parameters and the keys asked (all its numeric keys if none), or the error answer:
    401 for no operator, 404 for no device, 400 naming the bad parameter or a key the device never reported."""
    device = _device_or_error(request, key)
    if isinstance(device, JsonResponse):
        return device
    if not form.is_valid():
        parameter, messages = next(iter(form.errors.items()))
        return _error(400, "invalid_parameter", f"{parameter}: {messages[0]}", parameter=parameter)
    asked, known = form.cleaned_data["keys"], keys_of_device(device.id)
    unknown = [k for k in asked if k not in known]
    if unknown:
        return _error(400, "unknown_key", f"device {device.key!r} has no numeric key {unknown[0]!r}", parameter="keys")
    return device, form.cleaned_data, asked or known


@require_GET
def telemetry_history(request: HttpRequest, key: str, fmt: str = "json") -> HttpResponse:
    asked = _asked(request, key, HistoryParams(request.GET, csv=fmt == "csv"))
    if isinstance(asked, JsonResponse):
        return asked
    device, params, keys = asked
    query = HistoryQuery(
        device_id=device.id,
        keys=tuple(keys),
        start=params["start"],
        end=params["end"],
        agg=params["agg"],
        interval=params["interval"],
        limit=params["limit"],
        newest_first=params["order"] == "desc",
    )
    if fmt == "csv":
        response = StreamingHttpResponse(csv_stream(query, band=params["band"]), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{device.key}-{query.start}-{query.end}.csv"'
        return response
    data = readings_raw(query) if query.agg == "NONE" else readings_aggregate(query, band=params["band"])
    meta = {"start": query.start, "end": query.end, "agg": query.agg, "interval": query.interval}
    return JsonResponse({"device": device.key, **meta, "data": data})


@require_GET
def telemetry_window(request: HttpRequest, key: str) -> JsonResponse:
    """A live chart's window: per key min/max buckets of about one pixel for the older part, then the newest
    raw readings (ingest/selectors.py readings_window); `newest` is where the live stream takes over."""
    asked = _asked(request, key, WindowParams(request.GET))
    if isinstance(asked, JsonResponse):
        return asked
    device, params, keys = asked
    start, end = params["start"], params["end"]
    interval = window_interval(start, end, params["px"])
    window = readings_window(device_id=device.id, keys=keys, start=start, end=end, interval=interval)
    series = {k: {"buckets": s.buckets, "raw": s.raw, "split": s.split} for k, s in window.items()}
    newest = max((s.raw[-1][0] for s in window.values() if s.raw), default=None)
    return JsonResponse(
        {"device": device.key, "start": start, "end": end, "interval": interval, "newest": newest, "series": series}
    )


@require_GET
def telemetry_latest(request: HttpRequest, key: str) -> JsonResponse:
    device = _device_or_error(request, key)
    if isinstance(device, JsonResponse):
        return device
    return JsonResponse({"device": device.key, "latest": readings_latest(device.id)})
