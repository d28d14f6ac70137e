"""History API: `GET /api/v1/devices/<KEY>/telemetry` (JSON or CSV), `GET /api/v1/devices/<KEY>/latest` and
`GET /api/v1/devices/<KEY>/window` (a live chart's decimated window).

REST framework views of the operator API (authentication, errors and schema as every /api/v1/ endpoint:
docs/api.md) whose answers are the same bytes as before it: they still build their JsonResponse and CSV
stream, and their parameters are still Django forms (api/params.py). Function names and URL names are
unchanged; a new endpoint here takes `@history_endpoint(...)` and keeps `_device_or_error`."""

from collections.abc import AsyncIterator, Sequence

from asgiref.sync import sync_to_async
from django import forms
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request

from api.credentials import operator_of
from api.params import HistoryParams, WindowParams
from core.state import runtime_in
from devices.models import Device
from history.export import csv_stream
from history.selectors import (
    HistoryQuery,
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


def history_endpoint(summary: str, *, parameters: Sequence[OpenApiParameter] = (), csv: bool = False):
    """A GET endpoint of the history API: a REST framework view, described in the OpenAPI schema (`csv`: its
    `.csv` route streams text/csv)."""
    answers = {(200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description=summary)}
    if csv:
        answers[(200, "text/csv")] = OpenApiResponse(OpenApiTypes.STR, description="ts,time,key,value[,min,max]")
    error = OpenApiResponse(OpenApiTypes.OBJECT, description='{"error": {"code", "message", "parameter"?}}')

    def wrap(view):
        schema = extend_schema(
            summary=summary, parameters=list(parameters), responses={**answers, 400: error, 401: error, 404: error}
        )
        return schema(api_view(["GET"])(view))

    return wrap


HISTORY_PARAMETERS = [
    OpenApiParameter("keys", str, description="comma-separated; default: every numeric key the device has sent"),
    OpenApiParameter("start", int, description="ms since the epoch, UTC, inclusive (default: end − 24 h)"),
    OpenApiParameter("end", int, description="ms since the epoch, UTC, exclusive (default: now)"),
    OpenApiParameter("agg", str, enum=["NONE", "AVG", "MIN", "MAX", "SUM", "COUNT"], description="default NONE"),
    OpenApiParameter("interval", int, description="bucket width in ms (aggregates; default: chosen)"),
    OpenApiParameter("limit", int, description="raw points per key (default 100)"),
    OpenApiParameter("order", str, enum=["asc", "desc"], description="raw points oldest or newest first"),
    OpenApiParameter("band", bool, description="1: min and max beside each aggregated value"),
]


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


@history_endpoint(
    "A device's stored readings, raw or aggregated (docs/history.md); `.csv`: the same points streamed as CSV",
    parameters=HISTORY_PARAMETERS,
    csv=True,
)
def telemetry_history(request: Request, key: str, fmt: str = "json") -> HttpResponse | StreamingHttpResponse:
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
        aggregated = None if query.agg == "NONE" else readings_aggregate(query, band=params["band"])
        reads = runtime_in(request.scope).reads  # the ASGI request's scope, through REST framework's Request
        stream = csv_stream(query, reads=reads, band=params["band"], aggregated=aggregated)
        response = StreamingHttpResponse(_released_on_failure(stream), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{device.key}-{query.start}-{query.end}.csv"'
        return response
    data = readings_raw(query) if query.agg == "NONE" else readings_aggregate(query, band=params["band"])
    meta = {"start": query.start, "end": query.end, "agg": query.agg, "interval": query.interval}
    return JsonResponse({"device": device.key, **meta, "data": data})


async def _released_on_failure(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-raises a failure midway (the server then cuts the response short: the client sees it), after giving back
    this request's database connection, which Django gives back only when a response completes."""
    try:
        async for chunk in stream:
            yield chunk
    except BaseException:
        await sync_to_async(connections.close_all)()  # the request's own thread: where the view queried
        raise


@history_endpoint(
    "A live chart's window: per key min/max buckets of about a pixel, then the newest raw readings",
    parameters=[
        OpenApiParameter("keys", str, description="comma-separated; default: every numeric key the device has sent"),
        OpenApiParameter("start", int, description="ms since the epoch, UTC, inclusive"),
        OpenApiParameter("end", int, description="ms since the epoch, UTC, exclusive"),
        OpenApiParameter("px", int, description="the chart's width in pixels: about one bucket each"),
    ],
)
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


@history_endpoint("The newest value of each key of a device, text values included")
def telemetry_latest(request: HttpRequest, key: str) -> JsonResponse:
    device = _device_or_error(request, key)
    if isinstance(device, JsonResponse):
        return device
    return JsonResponse({"device": device.key, "latest": readings_latest(device.id)})
