"""Logging filters: device tokens travel in URL paths, so every log line is scrubbed of them."""

import logging
import re
import time
import uuid
from contextvars import ContextVar

# /api/v1/<TOKEN>/telemetry and /ws/v1/<TOKEN>/telemetry (ThingsBoard puts the token in the path).
_TOKEN_PATH = re.compile(r"(/(?:api|ws)/v1/)(?!devices/)[^/\s\"?]+(/telemetry)")


def redact(text: str) -> str:
    return _TOKEN_PATH.sub(r"\1***\2", text)


_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RedactTokensFilter(logging.Filter):
    """Rewrites the message and any extra attribute (e.g. Django's `request`, which the JSON format
    serialises) so no device token reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRIBUTES and not isinstance(value, int | float | bool | None):
                text = str(value)
                if (scrubbed := redact(text)) != text:
                    setattr(record, name, scrubbed)
        return True


# The request (or WebSocket connection) a log line belongs to; set by RequestIdMiddleware.
request_id: ContextVar[str] = ContextVar("request_id", default="-")
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record, for the plain and JSON formats alike."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID when it is sane, else a new random one."""
    if header and _VALID_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class ThrottledLog:
    """Logs a recurring problem at most once per `interval` seconds, with how often it recurred meanwhile
    (a Redis outage fails every flush: 50 identical warnings a second help nobody)."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        suffix = f" (and {self._suppressed} more like it in the last {self._interval:g} s)" if self._suppressed else ""
        self._logger.warning(message + suffix, *args, exc_info=exc_info)
        self._next, self._suppressed = now + self._interval, 0
