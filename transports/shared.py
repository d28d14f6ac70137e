"""What the device transports of one process share, handed to each connection with its scope (core/state.py)."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.state import runtime_in
from ingest.service import Ingest
from transports.revocation import OpenSockets
from transports.tokens import DeviceTokens


@dataclass(frozen=True, slots=True)
class TransportConfig:
    max_inflight_frames: int = 1000  # a device socket's frames waiting for commit (HUB_WS_MAX_INFLIGHT_FRAMES)
    token_recheck_seconds: float = 5.0  # how soon a rotated token's open sockets are closed


@dataclass(frozen=True, slots=True)
class DeviceTransports:
    """The ingest entry point, the open device sockets (for revocation), the transports' limits and the HTTP path's
    token cache."""

    ingest: Ingest
    sockets: OpenSockets
    config: TransportConfig
    tokens: DeviceTokens


def transports_in(scope: Mapping[str, Any]) -> DeviceTransports | None:
    """This process's device transports; None where it serves no devices (HUB_ROLE=stream)."""
    return runtime_in(scope).devices
