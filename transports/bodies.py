"""Request bodies are checked before they are read, and cut off at their limit while they stream in.

Django's ASGI handler reads a whole request body, spooling it to a temporary file past
FILE_UPLOAD_MAX_MEMORY_SIZE, before any middleware or view runs: a 400 MiB POST to any path was written to disk
before the hub could say 401 or 413. `BodyLimit` sits in front of Django. On the device ingest path
(`POST /api/v1/<TOKEN>/telemetry`) it checks the token and the declared Content-Length before a byte of the body
is read; on every path it counts the body as it arrives and answers 413 the moment it passes the limit
(HUB_MAX_MESSAGE_BYTES for ingest, Django's DATA_UPLOAD_MAX_MEMORY_SIZE elsewhere), closing the connection, so
what a client sends beyond the limit is never read.
"""

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import orjson
from django.conf import settings

from core.logs import request_id, request_id_from
from ingest.parsing import ErrorCode
from transports.http import telemetry_served
from transports.shared import transports_in

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]  # a message is any mapping (as Django's ASGI handler takes it)
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Refusals are logged as Django logs its own 4xx answers (same logger and shape), with the request id.
logger = logging.getLogger("django.request")
INGEST_PATH = re.compile(r"/api/v1/(?!devices/)([^/]+)/telemetry")


class BodyLimit:
    """ASGI middleware for HTTP: authenticate device ingest before its body, and bound every body (`larger`: the
    paths whose bodies may exceed Django's DATA_UPLOAD_MAX_MEMORY_SIZE, and their own limit)."""

    def __init__(self, app: App, *, larger: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id.set(request_id_from((_header(scope, b"x-request-id") or b"").decode("latin-1")))
        limit = self.larger.get(scope["path"], settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        match = INGEST_PATH.fullmatch(scope["path"])
        transports = transports_in(scope) if match and scope["method"] == "POST" else None
        if match and transports is not None:
            limit = transports.ingest.limits.max_bytes
            device = await transports.tokens.device(match[1])
            if device is None:
                await _refuse(scope, receive, send, 401, "unauthorized", "unknown device token", drain=limit)
                return
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await _refuse(scope, receive, send, 413, ErrorCode.TOO_LARGE, f"the limit is {limit} bytes", drain=0)
                return
            # Served here, not by Django: a device's post needs none of a page's middleware (transports/http.py).
            await telemetry_served(_Counted(scope, receive, send, limit), send, transports, device, limit)
            return
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, 413, ErrorCode.TOO_LARGE, f"the limit is {limit} bytes", drain=0)
            return
        await self.app(scope, _Counted(scope, receive, send, limit), send)


class _Counted:
    """The body as it arrives, until it passes `limit`: then 413 is sent and the app is told the client left."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self._scope, self._receive, self._send, self._limit = scope, receive, send, limit
        self._seen = 0
        self._refused = False

    async def __call__(self) -> dict[str, Any]:
        if self._refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._limit:
                self._refused = True
                text = f"the limit is {self._limit} bytes"
                await _answer(self._scope, self._send, 413, ErrorCode.TOO_LARGE, text, close=True)
                return {"type": "http.disconnect"}
        return message


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, text: str, *, drain: int) -> None:
    """Answer without the app. A body of at most `drain` bytes is read and dropped first, so the connection
    can be kept; anything longer is never read: the connection is closed after the answer."""
    declared = _content_length(scope)
    complete = not declared and _header(scope, b"transfer-encoding") is None  # no body at all
    # Expect: 100-continue: the client sends its body only if asked, so there is nothing to drain.
    if not complete and declared is not None and declared <= drain and _header(scope, b"expect") is None:
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            more = message.get("more_body", False)
        complete = True
    await _answer(scope, send, status, code, text, close=not complete)


async def _answer(scope: Scope, send: Send, status: int, code: str, text: str, *, close: bool) -> None:
    logger.warning("%s: %s", HTTPStatus(status).phrase, scope["path"], extra={"status_code": status})
    body = orjson.dumps({"error": {"code": code, "message": text, "retry": False}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"x-request-id", request_id.get().encode()))
    if close:
        headers.append((b"connection", b"close"))  # uvicorn closes the connection once this is sent
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    return int(value) if value.isdigit() else None
