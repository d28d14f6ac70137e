"""History API: `GET /api/v1/devices/<KEY>/telemetry` (JSON or CSV) and `GET /api/v1/devices/<KEY>/latest`."""

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from dashboards.auth import operator_of
from dashboards.forms import HistoryParams
from devices.models import Device
from ingest.selectors import (
    HistoryQuery,
    csv_stream,
    keys_of_device,
    readings_aggregate,
    readings_latest,
    readings_raw,
)


def _error(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


def _device_or_error(request: HttpRequest, key: str) -> Device | JsonResponse:
    if not operator_of(request).is_authenticated:
        return _error(401, "unauthorized", "log in or send Authorization: Bearer <api token>")
    device = Device.objects.filter(key=key).first()
    return device if device is not None else _error(404, "unknown_device", f"no device {key!r}")


@require_GET
def telemetry_history(request: HttpRequest, key: str, fmt: str = "json") -> HttpResponse:
    device = _device_or_error(request, key)
    if isinstance(device, JsonResponse):
        return device
    form = HistoryParams(request.GET, csv=fmt == "csv")
    if not form.is_valid():
        parameter, messages = next(iter(form.errors.items()))
        return _error(400, "invalid_parameter", f"{parameter}: {messages[0]}", parameter=parameter)
    params = form.cleaned_data
    known = keys_of_device(device.id)
    keys = params["keys"] or known
    unknown = [k for k in keys if k not in known]
    if unknown:
        return _error(400, "unknown_key", f"device {key!r} has no numeric key {unknown[0]!r}", parameter="keys")
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
        stream = csv_stream(query, band=params["band"], aggregated=aggregated)
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


@require_GET
def telemetry_latest(request: HttpRequest, key: str) -> JsonResponse:
    device = _device_or_error(request, key)
    if isinstance(device, JsonResponse):
        return device
    return JsonResponse({"device": device.key, "latest": readings_latest(device.id)})
