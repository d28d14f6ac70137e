import os

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hub.roles import SERVED, Role
from hub.server import prepare_multiprocess_metrics, serve_workers, uvicorn_options


class Command(BaseCommand):
    help = "Serve the hub (HTTP + WebSocket) with uvicorn."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1)
        parser.add_argument(
            "--role",
            choices=[role.value for role in SERVED],
            help="what this server does (HUB_ROLE, default all): ingest serves devices, stream the dashboards' "
            "live streams; a load balancer routes /ws/v1/devices/*/stream and /ws/v1/fleet/stream to stream",
        )

    def handle(self, *args, host: str, port: int, workers: int, role: str | None, **options) -> None:
        if role:  # this process's settings, and the workers' (they read HUB_ROLE at start)
            settings.HUB_ROLE = os.environ["HUB_ROLE"] = role
        served = Role(settings.HUB_ROLE)
        if served is not Role.ALL and not settings.REDIS_URLS:
            raise CommandError(f"--role {served} needs HUB_REDIS_URL: streams and ingest meet on Redis")
        if served is Role.STREAM and settings.HUB_STREAM_NICE:
            os.nice(settings.HUB_STREAM_NICE)  # ingest first: its workers inherit the lower priority
        if workers > 1 and not settings.REDIS_URLS:
            raise CommandError("--workers > 1 needs HUB_REDIS_URL: the in-memory channel layer is per process")
        if workers > 1:
            prepare_multiprocess_metrics()
            serve_workers("hub.asgi:application", host=host, port=port, workers=workers)
        else:
            uvicorn.run("hub.asgi:application", host=host, port=port, **uvicorn_options())
