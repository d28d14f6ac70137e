"""What a hub process is for (docs/deployment.md, "Roles"): one `Role`, whose properties say what it serves and
builds. hub/runtime.py builds the parts, hub/routing.py the WebSocket routes, `serve` and `mqtt_bridge` pick it."""

from enum import StrEnum


class Role(StrEnum):
    ALL = "all"  # one `serve` process doing everything (the default)
    INGEST = "ingest"  # devices (WebSocket, HTTP), the writer and what follows its commits, the maintenance loops
    STREAM = "stream"  # the dashboards' live streams
    BRIDGE = "bridge"  # an MQTT bridge worker: the writer and what follows its commits, nothing served

    @property
    def writes(self) -> bool:
        """Builds and starts the writer, its after-commit consumers (publisher, alert engine) and the ingest
        entry point."""
        return self in (Role.ALL, Role.INGEST, Role.BRIDGE)

    @property
    def serves_devices(self) -> bool:
        """Serves the device transports: `/ws/v1/<TOKEN>/telemetry` and `POST /api/v1/<TOKEN>/telemetry`."""
        return self in (Role.ALL, Role.INGEST)

    @property
    def streams(self) -> bool:
        """Serves the dashboards' live streams: the broadcaster, its routes and the channel layer's watchdog."""
        return self in (Role.ALL, Role.STREAM)

    @property
    def maintains(self) -> bool:
        """Runs the maintenance loops: token re-check, alert silence, webhook delivery, retention."""
        return self in (Role.ALL, Role.INGEST)


# What `serve` (HUB_ROLE) may be; a bridge is `mqtt_bridge`.
SERVED = (Role.ALL, Role.INGEST, Role.STREAM)
