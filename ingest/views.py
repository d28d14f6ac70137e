"""HTTP ingest: `POST /api/v1/<TOKEN>/telemetry`, answered 200 only after commit."""

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.registry import current_runtime
from devices.services import device_authenticate
from ingest.parsing import ErrorCode, IngestError
from ingest.writer import WriterClosed

DEVICE_SCOPE_KEY = "hub.device"  # set by hub/bodies.py (ingest imports no hub module)

logger = logging.getLogger(__name__)


_STATUS = {ErrorCode.TOO_LARGE: 413, ErrorCode.RATE_LIMITED: 429, ErrorCode.UNSTORABLE_VALUE: 422}


def _error(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


@csrf_exempt
@require_POST
async def telemetry_post(request: HttpRequest, token: str) -> JsonResponse:
    if settings.HUB_ROLE == "stream":
        return _error(
            421,
            "misdirected",
            "this hub process serves dashboard streams (HUB_ROLE=stream); send telemetry to an ingest process",
        )
    # Under ASGI hub/bodies.py authenticated the device before reading the body (and bounded the body).
    device = request.scope.get(DEVICE_SCOPE_KEY) if hasattr(request, "scope") else None
    device = device or await device_authenticate(token=token)
    if device is None:
        return _error(401, "unauthorized", "unknown device token")
    declared = request.headers.get("Content-Length", "0")
    if declared.isdigit() and int(declared) > settings.HUB_MAX_MESSAGE_BYTES:
        return _error(413, ErrorCode.TOO_LARGE, f"the limit is {settings.HUB_MAX_MESSAGE_BYTES} bytes")
    try:
        future = await current_runtime().ingest.message(device=device, body=request.body, transport="http")
        await future
    except RequestDataTooBig:
        return _error(413, ErrorCode.TOO_LARGE, f"the limit is {settings.HUB_MAX_MESSAGE_BYTES} bytes")
    except IngestError as error:
        # Final answers: sending the same message again fails the same way; only a rate limit passes.
        status = _STATUS.get(error.code, 400)
        return JsonResponse({"error": {**error.as_dict(), "retry": status == 429}}, status=status)
    except WriterClosed:
        return _error(503, "unavailable", "the hub is shutting down; retry", retry=True)
    except Exception:
        logger.exception("HTTP ingest for device %s failed at commit", device.key)
        return _error(500, "storage_failed", "the readings were not stored; retry later", retry=True)
    return JsonResponse({"ok": True})
