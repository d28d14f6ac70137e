"""HTTP ingest: `POST /api/v1/<TOKEN>/telemetry`, answered 200 only after commit."""

import logging

from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from devices.services import device_authenticate
from ingest.parsing import ErrorCode, IngestError
from ingest.writer import DeviceDeleted, WriterClosed
from transports.shared import transports_in

DEVICE_SCOPE_KEY = "hub.device"  # set by transports/bodies.py, which authenticated the device before its body

logger = logging.getLogger(__name__)


_STATUS = {ErrorCode.TOO_LARGE: 413, ErrorCode.RATE_LIMITED: 429, ErrorCode.UNSTORABLE_VALUE: 422}


def _error(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


@csrf_exempt
@require_POST
async def telemetry_post(request: ASGIRequest, token: str) -> JsonResponse:
    transports = transports_in(request.scope)
    if transports is None:
        return _error(
            421,
            "misdirected",
            "this hub process serves dashboard streams (HUB_ROLE=stream); send telemetry to an ingest process",
        )
    # transports/bodies.py authenticated the device before reading the body (and bounded the body).
    device = request.scope.get(DEVICE_SCOPE_KEY) or await device_authenticate(token=token)
    if device is None:
        return _error(401, "unauthorized", "unknown device token")
    limit = transports.ingest.limits.max_bytes
    declared = request.headers.get("Content-Length", "0")
    if declared.isdigit() and int(declared) > limit:
        return _error(413, ErrorCode.TOO_LARGE, f"the limit is {limit} bytes")
    try:
        future = await transports.ingest.message(device=device, body=request.body, transport="http")
        await future
    except RequestDataTooBig:
        return _error(413, ErrorCode.TOO_LARGE, f"the limit is {limit} bytes")
    except IngestError as error:
        # Final answers: sending the same message again fails the same way; only a rate limit passes.
        status = _STATUS.get(error.code, 400)
        return JsonResponse({"error": {**error.as_dict(), "retry": status == 429}}, status=status)
    except WriterClosed:
        return _error(503, "unavailable", "the hub is shutting down; retry", retry=True)
    except DeviceDeleted:
        return _error(401, "unauthorized", "unknown device token (the device was deleted)")
    except Exception:
        logger.exception("HTTP ingest for device %s failed at commit", device.key)
        return _error(500, "storage_failed", "the readings were not stored; retry later", retry=True)
    return JsonResponse({"ok": True})
