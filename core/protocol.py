"""Everything the channel layer carries and every WebSocket close code, in one place.

Group names, the shape of each layer message (a TypedDict with a Literal `type`, which Channels turns into
the handler name: "readings.batch" -> `readings_batch`) and the close codes of both WebSocket APIs. The pages'
scripts read the codes from `close_codes()` (rendered with `json_script`), never from copies.
"""

from enum import IntEnum
from typing import Literal, TypedDict

# Groups ---------------------------------------------------------------------------------------------------

FLEET_GROUP = "fleet"  # every hub process's fleet digests: the fleet page
ALERTS_GROUP = "alerts"  # every alert event: the fleet page
# The ASGI extension by which the hub's server lets a stream write an already-encoded frame to its socket
# (scope["extensions"][FRAME_EXTENSION]["write"](frame) -> bool; hub/protocols.py, live/broadcast.py).
FRAME_EXTENSION = "hub.websocket.frame"


def device_group(device_key: str) -> str:
    """One device's live readings and alert events: its device pages."""
    return f"device.{device_key}"


# Layer messages -------------------------------------------------------------------------------------------

# [ts_ms, key, value]: value is a number, or a string for text readings.
WireReading = list[int | str | float]


def wire_value(value: float | None, text: str | None) -> float | str:
    """A reading's value on the wire: its number, else its text (a reading holds one of the two)."""
    if value is not None:
        return value
    if text is None:
        raise ValueError("a reading with neither a number nor a text")
    return text


class ReadingsBatch(TypedDict):
    """Committed readings of one device (one flush, or several merged when the publisher fell behind)."""

    type: Literal["readings.batch"]
    device: str
    at: int  # ms, when the publisher took the flush: the streams' fan-out lag is measured from it
    readings: list[WireReading]


class ReadingsGap(TypedDict):
    """The publisher dropped committed readings of this device: its streams must catch up from the database."""

    type: Literal["readings.gap"]
    device: str


class DeviceDigest(TypedDict):
    """What the fleet page needs of one device: when it was last seen and its newest value per key."""

    seen: int  # ms, commit time of its latest flush
    n: int  # numeric readings committed since the previous digest (the fleet page's readings/min)
    latest: dict[str, WireReading]  # key -> [ts_ms, key, value], newest ts wins


class FleetDigest(TypedDict):
    """The devices that committed readings since the previous digest of the publishing process."""

    type: Literal["fleet.digest"]
    devices: dict[str, DeviceDigest]


class AlertRuleRef(TypedDict):
    id: int
    name: str
    key: str
    severity: str


class AlertEventPayload(TypedDict):
    """An alert event as it travels: webhooks, the channel layer and the pages alike."""

    id: int
    type: str  # fired | resolved | acknowledged
    rule: AlertRuleRef
    device: str
    at: int  # ms
    value: float | None


class AlertEventMessage(TypedDict):
    """Sent twice: to the `alerts` group for fleet pages and to the device's group for its pages. A process
    follows both groups on one channel, so `audience` says which copy this is."""

    type: Literal["alert.event"]
    audience: Literal["fleet", "device"]
    event: AlertEventPayload


LayerMessage = ReadingsBatch | ReadingsGap | FleetDigest | AlertEventMessage


# Close codes (RFC 6455's registry and the private 4000-4999 range) ------------------------------------------


class Close(IntEnum):
    """Why the hub closed a WebSocket. Device ingest and dashboard streams share the numbering."""

    INTERNAL_ERROR = 1011  # a commit failed: the device resends what was not acked
    SERVICE_RESTART = 1012  # the hub is shutting down before commit: reconnect elsewhere and resend
    TRY_AGAIN_LATER = 1013  # too many connections on this process
    TOO_SLOW = 4008  # a dashboard that stopped reading: reconnect and catch up from the database
    STREAM_INTERRUPTED = 4011  # live messages may have been lost: reconnect and catch up from the database
    BAD_REQUEST = 4400  # a malformed stream request: final
    UNAUTHENTICATED = 4401  # no session: final (log in again)
    TOKEN_REVOKED = 4403  # the device's token was rotated or the device deleted: final
    UNKNOWN_DEVICE = 4404  # final


def close_codes() -> dict[str, int]:
    """Name -> code, for the pages' scripts."""
    return {code.name: code.value for code in Close}
