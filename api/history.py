"""History API: `GET /api/v1/devices/<KEY>/telemetry` (JSON or CSV), `GET /api/v1/devices/<KEY>/latest` and
`GET /api/v1/devices/<KEY>/window` (a live chart's decimated window).

REST framework views of the operator API (authentication, errors and schema as every /api/v1/ endpoint:
docs/api.md) whose answers are the same bytes as before it: they still build their JsonResponse and CSV
stream, and their parameters are still Django forms (api/params.py). Function names and URL names are
unchanged; a new endpoint here takes `@history_endpoint(...)` and keeps `_device_or_error`."""

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import orjson
from asgiref.sync import sync_to_async
from django import forms
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request

from accounts.requests import actor_in
from api.models import ApiToken
from api.params import HistoryParams, WindowParams
from core.epoch import from_epoch_ms
from devices.models import Device
from history.admission import Admitted, HistoryReads, ReadsFull, history_in
from history.answers import BadCursor, Cursor, aggregate_page, raw_page, window_answer
from history.export import aggregate_csv, csv_stream
from history.selectors import WINDOW_TAIL_POINTS, HistoryQuery, bucket_bounds, keys_of_device, readings_latest
from storage.engine import ReadTimedOut
from storage.engines import engine


def _error(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


def _device_or_error(request: HttpRequest, key: str) -> Device | JsonResponse:
    """The device, if the caller sees it (REST framework's permission asked the policy for VIEW already); a
    device out of their scope is as unknown as one that does not exist."""
    device = actor_in(request).devices().filter(key=key).first()
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


def json_with_text(head: dict, name: str, texts: dict[str, str], tail: dict) -> HttpResponse:
    """A JSON object: `head`'s fields, then `name` holding an object of JSON texts the database built (put in as
    they are: the points are never decoded and encoded again here), then `tail`'s fields."""
    parts = [orjson.dumps(head)[:-1], b',"', name.encode(), b'":{']
    parts.append(b",".join(orjson.dumps(key) + b":" + text.encode() for key, text in texts.items()))
    parts.append(b"}")
    parts += [b"," + orjson.dumps(key) + b":" + orjson.dumps(value) for key, value in tail.items()]
    parts.append(b"}")
    return HttpResponse(b"".join(parts), content_type="application/json")


def _client(request: Request) -> tuple[str, int]:
    """Who a heavy read counts against: the API token, else the logged-in operator."""
    token = getattr(request, "auth", None)
    return ("token", token.id) if isinstance(token, ApiToken) else ("user", request.user.id)


def _admitted(request: Request, history: HistoryReads, points: int) -> Admitted | JsonResponse | None:
    """A slot when the answer may hold more than light_points (None when it cannot), or the 429 answer."""
    if points <= history.config.light_points:
        return None
    try:
        return history.admission.admit(_client(request))
    except ReadsFull as full:
        answer = _error(429, "too_many_reads", str(full), retry=True)
        answer["Retry-After"] = str(full.retry_after)
        return answer


def _timed_out(history: HistoryReads) -> JsonResponse:
    seconds = history.config.timeout_seconds
    message = f"the query ran past {seconds:g} s: ask for less (a shorter range, fewer keys)"
    answer = _error(503, "read_timeout", message, retry=True)
    answer["Retry-After"] = "5"
    return answer


def _cursor(params: dict, keys: list[str]) -> Cursor | None | JsonResponse:
    if not params["cursor"]:
        return None
    try:
        return Cursor.decode(params["cursor"], keys=len(keys))
    except BadCursor as bad:
        return _error(400, "invalid_parameter", f"cursor: {bad}", parameter="cursor")


@history_endpoint(
    "A device's stored readings, raw or aggregated (docs/history.md); `.csv`: the same points streamed as CSV. An "
    "answer holds at most HUB_HISTORY_MAX_POINTS points: `next` is the cursor of the rest (null: complete)",
    parameters=HISTORY_PARAMETERS,
    csv=True,
)
def telemetry_history(request: Request, key: str, fmt: str = "json") -> HttpResponse | StreamingHttpResponse:
    asked = _asked(request, key, HistoryParams(request.GET, csv=fmt == "csv"))
    if isinstance(asked, JsonResponse):
        return asked
    device, params, keys = asked
    cursor = _cursor(params, keys)
    if isinstance(cursor, JsonResponse):
        return cursor
    history = history_in(request.scope)
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
        return _csv(request, device, query, band=params["band"], history=history)
    budget = history.config.max_points
    most = len(keys) * (query.limit if query.agg == "NONE" else _buckets(query))
    slot = _admitted(request, history, min(most, budget))
    if isinstance(slot, JsonResponse):
        return slot
    try:
        with engine().bounded(history.config.timeout_seconds):
            if query.agg == "NONE":
                page = raw_page(query, budget=budget, cursor=cursor)
            else:
                page = aggregate_page(query, budget=budget, band=params["band"], cursor=cursor)
        head = {
            "device": device.key,
            "start": query.start,
            "end": query.end,
            "agg": query.agg,
            "interval": query.interval,
        }
        return json_with_text(head, "data", page.data, {"next": page.next.encode() if page.next else None})
    except ReadTimedOut:
        return _timed_out(history)
    finally:
        if slot is not None:
            slot.release()


def _buckets(query: HistoryQuery) -> int:
    assert query.interval  # noqa: S101 - an aggregate's interval: set by HistoryParams
    start, end = bucket_bounds(query.start, query.end, query.interval)
    return (end - start) // query.interval


def _csv(
    request: Request, device: Device, query: HistoryQuery, *, band: bool, history: HistoryReads
) -> HttpResponse | StreamingHttpResponse:
    """The whole answer (every page) as CSV, streamed; at most HUB_HISTORY_CSV_MAX_ROWS raw rows across its keys (a
    key's `limit` is capped at its share: the X-Hub-Rows-Per-Key header says how many)."""
    per_key = min(query.limit, max(1, history.config.csv_rows // max(1, len(query.keys))))
    query = replace(query, limit=per_key)
    slot = _admitted(request, history, history.config.light_points + 1)  # an export is always heavy
    if isinstance(slot, JsonResponse):
        return slot
    assert slot is not None  # noqa: S101 - heavy, so admitted or refused
    config = history.config
    try:  # an aggregate's first page before the answer starts: a failure is an answer, not a body cut short
        first = None
        if query.agg != "NONE":
            first = aggregate_csv(
                query, band=band, budget=config.max_points, timeout=config.timeout_seconds, cursor=None
            )
    except ReadTimedOut:
        slot.release()
        return _timed_out(history)
    except BaseException:
        slot.release()
        raise
    stream = csv_stream(
        query, reads=history.stream, band=band, first=first, budget=config.max_points, timeout=config.timeout_seconds
    )
    response = StreamingHttpResponse(_released(stream, slot), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{csv_filename(device.key, query.start, query.end)}"'
    response["X-Hub-Rows-Per-Key"] = str(per_key)
    return response


def csv_filename(key: str, start: int, end: int) -> str:
    """`boiler-1_2026-12-07T10-00Z_2026-12-07T11-00Z.csv`: the device and its UTC range, readable and sortable."""

    def instant(ms: int) -> str:
        try:
            return from_epoch_ms(ms).strftime("%Y-%m-%dT%H-%MZ")
        except (OverflowError, ValueError, OSError):
            return str(ms)

    return f"{key}_{instant(start)}_{instant(end)}.csv"


async def _released(stream: AsyncIterator[bytes], slot: Admitted) -> AsyncIterator[bytes]:
    """The stream, its read slot given back when it ends however it ends (sent whole, failed, or its client gone).
    A failure midway is re-raised (the server then cuts the response short: the client sees it), after giving back
    this request's database connection, which Django gives back only when a response completes."""
    try:
        async for chunk in stream:
            yield chunk
    except BaseException:
        await sync_to_async(connections.close_all)()  # the request's own thread: where the view queried
        raise
    finally:
        slot.release()


@history_endpoint(
    "A live chart's window: per key min/max buckets of about a pixel, then the newest raw readings (at most "
    "HUB_HISTORY_MAX_POINTS in all: with many keys, fewer pixels and a shorter raw tail each; `px`, `tail` say)",
    parameters=[
        OpenApiParameter("keys", str, description="comma-separated; default: every numeric key the device has sent"),
        OpenApiParameter("start", int, description="ms since the epoch, UTC, inclusive"),
        OpenApiParameter("end", int, description="ms since the epoch, UTC, exclusive"),
        OpenApiParameter("px", int, description="the chart's width in pixels: about one bucket each"),
    ],
)
def telemetry_window(request: Request, key: str) -> HttpResponse:
    """A live chart's window: per key min/max buckets of about one pixel for the older part, then the newest
    raw readings (history/answers.py window_answer); `newest` is where the live stream takes over."""
    asked = _asked(request, key, WindowParams(request.GET))
    if isinstance(asked, JsonResponse):
        return asked
    device, params, keys = asked
    history = history_in(request.scope)
    start, end, budget = params["start"], params["end"], history.config.max_points
    slot = _admitted(request, history, min(budget, len(keys) * (WINDOW_TAIL_POINTS + 2 * params["px"])))
    if isinstance(slot, JsonResponse):
        return slot
    try:
        with engine().bounded(history.config.timeout_seconds):
            window = window_answer(device_id=device.id, keys=keys, start=start, end=end, px=params["px"], budget=budget)
        head = {"device": device.key, "start": start, "end": end, "interval": window.interval, "px": window.px}
        return json_with_text({**head, "tail": window.tail, "newest": window.newest}, "series", window.series, {})
    except ReadTimedOut:
        return _timed_out(history)
    finally:
        if slot is not None:
            slot.release()


@history_endpoint("The newest value of each key of a device, text values included")
def telemetry_latest(request: HttpRequest, key: str) -> JsonResponse:
    device = _device_or_error(request, key)
    if isinstance(device, JsonResponse):
        return device
    return JsonResponse({"device": device.key, "latest": readings_latest(device.id)})
