"""HTTP ingest: `POST /api/v1/<TOKEN>/telemetry`, answered 200 only after commit.

Served at the ASGI layer (`telemetry_served`, called by transports/bodies.py before Django): a device's post
needs none of what a page needs (sessions, CSRF, authentication middleware, messages), and Django runs its
synchronous middleware on one thread for every request of the process, which held HTTP ingest to a few hundred
requests a second. The Django view below answers the same for any other way in (a WSGI test client)."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.logs import request_id
from devices.services import DeviceIdentity
from ingest.parsing import ErrorCode, IngestError
from ingest.writer import DeviceDeleted, WriterClosed
from transports.shared import DeviceTransports, transports_in

MISDIRECTED = "this hub process serves dashboard streams (HUB_ROLE=stream); send telemetry to an ingest process"

logger = logging.getLogger(__name__)

_STATUS = {ErrorCode.TOO_LARGE: 413, ErrorCode.RATE_LIMITED: 429, ErrorCode.UNSTORABLE_VALUE: 422}
Answer = tuple[int, dict[str, Any]]


def _error(status: int, code: str, message: str, **extra: object) -> Answer:
    return status, {"error": {"code": code, "message": message, **extra}}


async def telemetry_answer(transports: DeviceTransports, device: DeviceIdentity, body: bytes) -> Answer:
    """The answer to one post of `device`: 200 once its readings are committed, else why not."""
    try:
        future = await transports.ingest.message(device=device, body=body, transport="http")
        await future
    except IngestError as error:
        # Final answers: sending the same message again fails the same way; only a rate limit passes.
        status = _STATUS.get(error.code, 400)
        return status, {"error": {**error.as_dict(), "retry": status == 429}}
    except WriterClosed:
        return _error(503, "unavailable", "the hub is shutting down; retry", retry=True)
    except DeviceDeleted:
        transports.tokens.forget(device)
        return _error(401, "unauthorized", "unknown device token (the device was deleted)")
    except Exception:
        logger.exception("HTTP ingest for device %s failed at commit", device.key)
        return _error(500, "storage_failed", "the readings were not stored; retry later", retry=True)
    return 200, {"ok": True}


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def request_body(receive: Receive) -> bytes | None:
    """A request's whole body from its ASGI messages; None when the client left before its end."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def telemetry_served(
    receive: Receive, send: Send, transports: DeviceTransports, device: DeviceIdentity, limit: int
) -> None:
    """The whole exchange at the ASGI layer: the body (already bounded by transports/bodies.py as it arrives),
    the ingest, the answer. A client gone before its answer loses only the answer: what it sent is committed."""
    body = await request_body(receive)
    if body is None:
        return  # the client left (or the body passed its limit: 413 was sent)
    status, payload = await telemetry_answer(transports, device, body)
    content = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    headers.append((b"x-request-id", request_id.get().encode()))
    if status >= 400:
        logger.warning("HTTP ingest refused for %s: %s %s", device.key, status, payload["error"]["code"])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


@csrf_exempt
@require_POST
async def telemetry_post(request: ASGIRequest, token: str) -> JsonResponse:
    transports = transports_in(request.scope)
    if transports is None:
        return JsonResponse(_error(421, "misdirected", MISDIRECTED)[1], status=421)
    device = await transports.tokens.device(token)
    if device is None:
        return JsonResponse(_error(401, "unauthorized", "unknown device token")[1], status=401)
    limit = transports.ingest.limits.max_bytes
    declared = request.headers.get("Content-Length", "0")
    if declared.isdigit() and int(declared) > limit:
        return JsonResponse(_error(413, ErrorCode.TOO_LARGE, f"the limit is {limit} bytes")[1], status=413)
    try:
        body = request.body
    except RequestDataTooBig:
        return JsonResponse(_error(413, ErrorCode.TOO_LARGE, f"the limit is {limit} bytes")[1], status=413)
    status, payload = await telemetry_answer(transports, device, body)
    return JsonResponse(payload, status=status)
