"""uvicorn settings shared by `manage.py serve`, the demo, the tests and the benchmarks."""

import asyncio
import contextlib
import logging
import os
import shutil
import time
from typing import Any

import uvicorn
from django.conf import settings
from uvicorn.supervisors.multiprocess import Multiprocess

from hub.protocols import TimedHttpProtocol, TimedWebSocketProtocol

logger = logging.getLogger("uvicorn.error")

# A SIGTERMed hub stops within stop_budget() (docs/reliability.md: operators SIGKILL after it). uvicorn spends
# it in two steps, one after the other: it waits for open connections and their tasks (timeout_graceful_shutdown),
# and only then runs the lifespan shutdown that drains the writer. A connection can hold the first wait to its
# end: a dashboard that stopped reading keeps its socket open (close() flushes first, and it is never flushed),
# and a stream whose catch-up query is queued on Channels' one database thread cannot take its disconnect. So the
# first wait gets a few seconds, not the whole budget, and the drain keeps its HUB_WRITER_DRAIN_SECONDS.
CONNECTIONS_GRACE_SECONDS = 3


def uvicorn_options() -> dict[str, Any]:
    return {
        "lifespan": "on",
        # Far below uvicorn's 16 MiB default: bigger frames are refused with close code 1009.
        "ws_max_size": settings.HUB_WS_MAX_SIZE,
        # No permessage-deflate: a small compressed frame must not inflate into a huge one.
        "ws_per_message_deflate": False,
        # Idle and half-open sockets: a peer that does not answer a ping in time is closed.
        "ws_ping_interval": settings.HUB_WS_PING_INTERVAL,
        "ws_ping_timeout": settings.HUB_WS_PING_TIMEOUT,
        # Connection floods: past this many connections and tasks, uvicorn answers 503.
        "limit_concurrency": settings.HUB_MAX_CONNECTIONS,
        # Slow clients: deadlines for request headers, bodies and WebSocket handshakes (uvicorn has none).
        "http": TimedHttpProtocol,
        "ws": TimedWebSocketProtocol,
        # X-Forwarded-For/-Proto only from HUB_TRUSTED_PROXIES (none: the peer is the client). Always an explicit
        # list: given None, uvicorn trusts $FORWARDED_ALLOW_IPS or else 127.0.0.1, and a client could pick its own
        # address for the login and provisioning throttles through a proxy that passes its header on.
        "proxy_headers": bool(settings.HUB_TRUSTED_PROXIES),
        "forwarded_allow_ips": list(settings.HUB_TRUSTED_PROXIES),
        "log_config": None,  # Django's LOGGING (with token redaction) already configured the loggers
        "timeout_graceful_shutdown": CONNECTIONS_GRACE_SECONDS,
        "server_header": False,
    }


async def server_started(server: uvicorn.Server, serving: asyncio.Task[None], wait_s: float = 30.0) -> None:
    """Wait until uvicorn listens (it offers no event for this); raise if it stopped instead."""
    async with asyncio.timeout(wait_s):
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
            if serving.done():
                serving.result()
                raise RuntimeError("uvicorn exited before it started listening")
            await asyncio.sleep(0.02)


def prepare_multiprocess_metrics() -> str:
    """An empty PROMETHEUS_MULTIPROC_DIR for this server's workers (inherited by them via the environment)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(settings.VAR_DIR / "prometheus")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def stop_budget() -> float:
    """Seconds from SIGTERM to exit: the connections' grace, the writer's drain, and the rest of the way out."""
    return settings.HUB_WRITER_DRAIN_SECONDS + 5


class BoundedMultiprocess(Multiprocess):
    """uvicorn's worker supervisor, except that it waits for its SIGTERMed workers no longer than `stop_seconds`.

    uvicorn joins its workers without a timeout, and a worker's own timeout_graceful_shutdown covers only its wait
    for connections: whatever hangs after it (the lifespan, a database call in a thread that cannot be cancelled,
    the interpreter joining its threads) would keep `serve --workers N` running until someone SIGKILLs it, and a
    SIGKILL to this process alone leaves the workers orphaned. A worker still alive at the deadline is killed;
    nothing acked is lost by that (acks follow commits), only what it had not committed, which devices resend.
    """

    def __init__(self, config: uvicorn.Config, sockets: list, stop_seconds: float) -> None:
        super().__init__(config, sockets)
        self.stop_seconds = stop_seconds

    def join_all(self) -> None:
        deadline = time.monotonic() + self.stop_seconds
        for process in self.processes:
            process.process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.process.is_alive():
                logger.error(
                    "Child process [%s] still running %.1f s after SIGTERM: killed", process.pid, self.stop_seconds
                )
                process.kill()
        super().join_all()


def serve_workers(app: str, *, host: str, port: int, workers: int) -> None:
    """`uvicorn.run(app, workers=N, ...)` with the hub's options and a supervisor that keeps the stop budget."""
    config = uvicorn.Config(app, host=host, port=port, workers=workers, **uvicorn_options())
    sock = config.bind_socket()
    # The supervisor notices a signal up to 0.5 s late (it polls); the workers' deadline leaves that much.
    with contextlib.suppress(KeyboardInterrupt):
        BoundedMultiprocess(config, sockets=[sock], stop_seconds=stop_budget() - 0.5).run()
