"""The one telemetry payload grammar (ThingsBoard-compatible) for WebSocket, HTTP and MQTT.

Pure: bytes or str in, a list of Readings out, or an IngestError naming the broken rule.
A message is accepted or rejected as a whole. Rules and their rationale: docs/payload.md.
"""

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from core.keys import is_key

_MAX_EXACT_INT = 2**53  # beyond this a double no longer holds every integer
_SECONDS_FLOOR = 10**9  # 2001-09-09 in seconds: from here up, a small ts is a seconds timestamp
_SECONDS_CEILING = 10**11  # ms timestamps below this are before 1973: almost surely seconds
_MICROSECONDS_FLOOR = 10**14  # ms timestamps above this are after year 5138: µs or ns
_NANOSECONDS_FLOOR = 10**17
# The largest magnitude stored. Rollups sum a key's readings per minute and per hour (the writer's tables, or
# TimescaleDB's continuous aggregates) in double precision, which PostgreSQL refuses to overflow: an hour holds
# at most 3.6 million readings of one key (one per millisecond), and 3.6e6 × 1e300 stays below 1.8e308.
MAX_MAGNITUDE = 1e300


class ErrorCode:
    """Machine-readable error codes, stable across transports."""

    MALFORMED_JSON = "malformed_json"
    TOO_LARGE = "payload_too_large"
    TOO_MANY_READINGS = "too_many_readings"
    INVALID_SHAPE = "invalid_shape"
    INVALID_KEY = "invalid_key"
    INVALID_VALUE = "invalid_value"
    INVALID_TS = "invalid_ts"
    TS_UNIT = "ts_unit"
    TS_IN_FUTURE = "ts_in_future"
    TS_TOO_OLD = "ts_too_old"
    UNSUPPORTED_FRAME = "unsupported_frame"
    RATE_LIMITED = "rate_limited"
    VALUE_OUT_OF_RANGE = "value_out_of_range"
    UNSTORABLE_VALUE = "unstorable_value"
    TOO_MANY_KEYS = "too_many_keys"


class IngestError(Exception):
    """A message broke a rule; nothing from it is stored."""

    def __init__(self, code: str, message: str, *, index: int | None = None, key: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.index = index
        self.key = key

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.index is not None:
            body["index"] = self.index
        if self.key is not None:
            body["key"] = self.key
        return body


class Reading(NamedTuple):
    """One value of one key at one instant. Numbers (and booleans as 1/0) go in `value`, strings in `text`.

    A tuple, not a frozen dataclass: a 100-reading message builds a hundred, and a tuple is built in a third of
    the time (bench/ingest.py, issue 26).
    """

    ts: int  # milliseconds since the epoch, UTC
    key: str
    value: float | None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 64 * 1024
    max_readings: int = 1000
    max_future_ms: int = 10 * 60 * 1000
    max_past_ms: int = 365 * 24 * 3600 * 1000


def parse_telemetry(body: bytes | str, *, now_ms: int, limits: Limits) -> list[Reading]:
    """Parse one telemetry message; `now_ms` stamps readings that carry no `ts`."""
    _check_size(body, limits)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(ErrorCode.MALFORMED_JSON, f"body is not valid JSON: {exc}") from None
    readings: list[Reading] = []
    if isinstance(document, list):
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                raise IngestError(ErrorCode.INVALID_SHAPE, "batch items must be JSON objects", index=index)
            _parse_object(item, readings, now_ms=now_ms, limits=limits, index=index)
    elif isinstance(document, dict):
        _parse_object(document, readings, now_ms=now_ms, limits=limits, index=None)
    else:
        raise IngestError(ErrorCode.INVALID_SHAPE, "body must be a JSON object or an array of objects")
    return readings


def _check_size(body: bytes | str, limits: Limits) -> None:
    # A str holds at most 4 UTF-8 bytes per character: encode only when the cheap bound is inconclusive.
    size = len(body) if isinstance(body, bytes) or len(body) * 4 <= limits.max_bytes else len(body.encode())
    if size > limits.max_bytes:
        raise IngestError(ErrorCode.TOO_LARGE, f"message is {size} bytes; the limit is {limits.max_bytes}")


def _parse_object(obj: dict[str, Any], out: list[Reading], *, now_ms: int, limits: Limits, index: int | None) -> None:
    # As in ThingsBoard, an object is timestamped only when it has both "ts" and "values".
    if "ts" in obj and "values" in obj:
        if len(obj) != 2:
            extra = sorted(set(obj) - {"ts", "values"})
            raise IngestError(ErrorCode.INVALID_SHAPE, f"unexpected field {extra[0]!r} beside ts/values", index=index)
        values = obj["values"]
        if not isinstance(values, dict):
            raise IngestError(ErrorCode.INVALID_SHAPE, '"values" must be a JSON object', index=index)
        ts = _check_ts(obj["ts"], now_ms=now_ms, limits=limits, index=index)
    else:
        values, ts = obj, now_ms
    for key, raw in values.items():
        if raw is None:
            continue  # ThingsBoard skips nulls
        if not is_key(key):
            raise IngestError(
                ErrorCode.INVALID_KEY,
                "keys are 1-64 characters of letters, digits, '_', '.' and '-'",
                index=index,
                key=key[:80],
            )
        # The common case first, in one comparison: a finite float within range (NaN fails every comparison).
        if type(raw) is float and -MAX_MAGNITUDE <= raw <= MAX_MAGNITUDE:
            out.append(Reading(ts, key, raw))
        else:
            out.append(_reading(ts, key, raw, index=index))
        if len(out) > limits.max_readings:
            raise IngestError(
                ErrorCode.TOO_MANY_READINGS,
                f"more than {limits.max_readings} readings in one message",
                index=index,
            )


def _reading(ts: int, key: str, raw: Any, *, index: int | None) -> Reading:
    if isinstance(raw, bool):
        return Reading(ts, key, 1.0 if raw else 0.0)
    if isinstance(raw, int):
        if -_MAX_EXACT_INT <= raw <= _MAX_EXACT_INT:
            return Reading(ts, key, float(raw))
        raise IngestError(
            ErrorCode.INVALID_VALUE, "integer beyond ±2^53 cannot be stored exactly", index=index, key=key
        )
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise IngestError(ErrorCode.INVALID_VALUE, "NaN and Infinity are not allowed", index=index, key=key)
        if abs(raw) > MAX_MAGNITUDE:
            raise IngestError(
                ErrorCode.VALUE_OUT_OF_RANGE,
                f"numbers are at most {MAX_MAGNITUDE:g} in magnitude",
                index=index,
                key=key,
            )
        return Reading(ts, key, raw)
    if isinstance(raw, str):
        if "\x00" in raw:  # PostgreSQL text cannot hold NUL
            raise IngestError(
                ErrorCode.UNSTORABLE_VALUE, "text values cannot contain U+0000 (NUL)", index=index, key=key
            )
        return Reading(ts, key, None, raw)
    raise IngestError(
        ErrorCode.INVALID_VALUE,
        "values are numbers, booleans or strings (not objects or arrays)",
        index=index,
        key=key,
    )


def _check_ts(raw: Any, *, now_ms: int, limits: Limits, index: int | None) -> int:
    # The common case in two comparisons: milliseconds within the window, which (at any date after 1973 and
    # before 5138) excludes the seconds and microseconds ranges below.
    lowest, highest = now_ms - limits.max_past_ms, now_ms + limits.max_future_ms
    if type(raw) is int and _SECONDS_CEILING <= lowest <= raw <= highest < _MICROSECONDS_FLOOR:
        return raw
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool):  # in this order, the type checker narrows `raw` to int
        raise IngestError(ErrorCode.INVALID_TS, '"ts" must be an integer of milliseconds since the epoch', index=index)
    if _SECONDS_FLOOR <= raw < _SECONDS_CEILING:
        raise IngestError(ErrorCode.TS_UNIT, f"ts={raw} looks like seconds; send milliseconds", index=index)
    if raw >= _NANOSECONDS_FLOOR:
        raise IngestError(ErrorCode.TS_UNIT, f"ts={raw} looks like nanoseconds; send milliseconds", index=index)
    if raw >= _MICROSECONDS_FLOOR:
        raise IngestError(ErrorCode.TS_UNIT, f"ts={raw} looks like microseconds; send milliseconds", index=index)
    if raw > now_ms + limits.max_future_ms:
        raise IngestError(
            ErrorCode.TS_IN_FUTURE,
            f"ts={raw} is more than {limits.max_future_ms // 1000} s in the future",
            index=index,
        )
    if raw < now_ms - limits.max_past_ms:
        raise IngestError(
            ErrorCode.TS_TOO_OLD,
            f"ts={raw} is more than {limits.max_past_ms // 86_400_000} days in the past",
            index=index,
        )
    return raw
