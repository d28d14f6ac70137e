"""Liveness, readiness and metrics endpoints (unauthenticated, cheap, no tokens involved)."""

import asyncio
import os
import time
from urllib.parse import urlsplit

from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.metrics import metrics_exposition
from storage.engines import engine

_CHECK_TIMEOUT = 2.0


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and its event loop answers."""
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> JsonResponse:
    """Database, channel layer and (when configured) MQTT broker reachable; 503 names what is not."""
    checks = {"database": _database(), "channel_layer": _channel_layer()}
    if settings.HUB_MQTT_URL:
        checks["mqtt_broker"] = _broker(settings.HUB_MQTT_URL)
    results = await asyncio.gather(*(_timed(name, check) for name, check in checks.items()))
    failed = {name: error for name, error in results if error}
    body = {"status": "unavailable" if failed else "ready", "checks": {n: e or "ok" for n, e in results}}
    return JsonResponse(body, status=503 if failed else 200)


def metrics(request: HttpRequest) -> HttpResponse:
    content, content_type = metrics_exposition(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    return HttpResponse(content, content_type=content_type)


async def _timed(name: str, check) -> tuple[str, str | None]:
    try:
        await asyncio.wait_for(check, _CHECK_TIMEOUT)
    except TimeoutError:
        return name, f"no answer within {_CHECK_TIMEOUT:.0f}s"
    except Exception as exc:
        return name, f"{type(exc).__name__}: {exc}"[:300]
    return name, None


async def _database() -> None:
    await engine().ping(_CHECK_TIMEOUT)


async def _channel_layer() -> None:
    # A send to a throwaway group exercises the layer's connection (Redis) without side effects.
    layer = get_channel_layer()
    await layer.group_send(f"readyz.{os.getpid()}.{time.monotonic_ns()}", {"type": "readyz.ping"})


async def _broker(url: str) -> None:
    parts = urlsplit(url)
    default = 8883 if parts.scheme == "mqtts" else 1883
    _reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or default)
    writer.close()
    await writer.wait_closed()
