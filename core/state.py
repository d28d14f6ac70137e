"""The process's runtime as every connection finds it: in the lifespan state its scope carries.

The ASGI lifespan puts the runtime into the lifespan state (`scope["state"]["hub"]`), and uvicorn copies that state
into every connection's scope, as Starlette's `request.state` works: consumers and views are handed the process's
parts, they never look them up in a global. Each package names the parts it needs (`DeviceTransport`, `Streams`,
...); hub/runtime.py is what holds them.
"""

from collections.abc import Mapping
from typing import Any

RUNTIME_KEY = "hub"


class NoRuntime(RuntimeError):
    """A connection whose scope carries no hub runtime (serve hub.asgi with lifespan "on", or hand one in)."""


def runtime_in(scope: Mapping[str, Any]) -> Any:
    """The runtime the lifespan put into this connection's scope. Any: each caller reads the part it needs."""
    state = scope.get("state")
    if not isinstance(state, Mapping) or RUNTIME_KEY not in state:
        raise NoRuntime("no hub runtime in this connection's scope: serve hub.asgi with lifespan 'on'")
    return state[RUNTIME_KEY]


def lifespan_state(runtime: object) -> dict[str, Any]:
    """The lifespan state carrying `runtime` (for a client that builds scopes itself: Django's AsyncClient)."""
    return {RUNTIME_KEY: runtime}


def with_runtime(scope: Mapping[str, Any], runtime: object) -> dict[str, Any]:
    """A copy of `scope` carrying `runtime` in its state (what uvicorn does for every connection)."""
    return {**scope, "state": {**(scope.get("state") or {}), RUNTIME_KEY: runtime}}
