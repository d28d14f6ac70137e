"""Logging filters: device tokens travel in URL paths, so every log line is scrubbed of them.

Scrubbed twice: when a record is made (`install_token_redaction`, so every handler, an operator's own and
pytest's included, gets it clean) and by the handlers' filter (`RedactTokensFilter`, for what is attached after
that: `extra` attributes such as Django's request, and tracebacks).
"""

import logging
import random
import re
import time
from contextvars import ContextVar

# ThingsBoard puts a device's token in the path: /api/v1/<TOKEN>/telemetry, /attributes, /rpc, ... So the first
# segment after /api/vN/ or /ws/vN/, in any case, 404s included, is treated as a token, except the hub's own named
# routes (the operator API's, /ws/v1/devices/<KEY>/stream, /ws/v1/fleet/stream), whose keys are not secret.
# The path is read as a server would normalise it: empty and "." segments before it are skipped (//T, /./T).
_NAMED_ROUTES = "devices|fleet|alerts|alert-rules|tokens|provisioning-profiles|provision|schema|docs"
_TOKEN_PATH = re.compile(
    rf"(/(?:api|ws)/v\d+/(?:\.?/)*)(?!(?:{_NAMED_ROUTES})(?:[/\s\"'?#]|$))[^/\s\"'?#]+", re.IGNORECASE
)
# A token in a query string or form field (`?token=T`, `access_token=T`, `password=T`: the MQTT password is one).
_TOKEN_PARAMETER = re.compile(r"((?:^|[?&;\s\"'])(?:access_)?(?:token|password)=)[^&;\s\"'#]+", re.IGNORECASE)
# Wherever else a token lands (a token sent where a device key goes, in a message body): the shape of every hub token
# (`token_new`: 24 random bytes, 32 URL-safe characters) standing alone. A device key of exactly that shape is
# redacted too: keys are not secret, so that costs a log line's detail, never a secret.
_TOKEN_SHAPED = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32}(?![A-Za-z0-9_-])")


def redact(text: str) -> str:
    text = _TOKEN_PATH.sub(r"\1***", text)
    text = _TOKEN_PARAMETER.sub(r"\1***", text)
    return _TOKEN_SHAPED.sub("***", text)


def _scrub(record: logging.LogRecord) -> None:
    """Redact the record's message; its arguments one by one where that suffices (formatters may read them)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
    try:
        message = record.getMessage()
    except Exception:  # noqa: S110 - a bad format string: the handler reports it, as logging does
        return
    if (cleaned := redact(message)) != message:
        record.msg, record.args = cleaned, None


def install_token_redaction() -> None:
    """Every log record of this process is scrubbed of tokens as it is made (idempotent)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts_tokens", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _scrub(record)
        return record

    factory.redacts_tokens = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RedactTokensFilter(logging.Filter):
    """Rewrites the message and any extra attribute (e.g. Django's `request`, which the JSON format
    serialises) so no device token reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub(record)
        if record.exc_info and not record.exc_text:  # formatted here so that the text can be scrubbed
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
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
    # 128 random bits from the process's generator, not uuid4's os.urandom: a request id names a request in the
    # logs, it guards nothing, and the system call was 3 % of the event loop at 3,000 device posts a second.
    return f"{random.getrandbits(128):032x}"  # noqa: S311


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
