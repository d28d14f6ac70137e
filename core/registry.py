"""The running hub of this process, for the code that Django and Channels create per request or socket.

`hub/runtime.py` builds one `HubRuntime` per process (the ASGI lifespan, `mqtt_bridge`, a test) and installs
it here while it runs; consumers and views reach the writer, the stream registry and the read pool through
`current_runtime()`. This is the one process-wide mutable reference the hub keeps (docs/architecture.md).
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: importing hub.runtime would import every app
    from hub.runtime import HubRuntime

_current: "HubRuntime | None" = None


class NoRuntime(RuntimeError):
    """No hub runtime is running in this process (serve the ASGI app with its lifespan, or use hub_runtime())."""


def current_runtime() -> "HubRuntime":
    if _current is None:
        raise NoRuntime("no hub runtime is running in this process: serve hub.asgi with lifespan 'on'")
    return _current


def runtime_install(runtime: "HubRuntime") -> None:
    global _current
    if _current is not None and _current is not runtime:
        raise RuntimeError("another hub runtime is already running in this process")
    _current = runtime


def runtime_uninstall(runtime: "HubRuntime") -> None:
    global _current
    if _current is runtime:
        _current = None
