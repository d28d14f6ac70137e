"""uvicorn settings shared by `manage.py serve`, the demo, the tests and the benchmarks."""

import asyncio
import os
import shutil
from typing import Any

import uvicorn
from django.conf import settings


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
        "log_config": None,  # Django's LOGGING (with token redaction) already configured the loggers
        "timeout_graceful_shutdown": int(settings.HUB_WRITER_DRAIN_SECONDS) + 5,
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
