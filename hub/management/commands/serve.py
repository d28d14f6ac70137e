import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hub.server import prepare_multiprocess_metrics, serve_workers, uvicorn_options


class Command(BaseCommand):
    help = "Serve the hub (HTTP + WebSocket) with uvicorn."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args, host: str, port: int, workers: int, **options) -> None:
        if workers > 1 and not settings.REDIS_URLS:
            raise CommandError("--workers > 1 needs HUB_REDIS_URL: the in-memory channel layer is per process")
        if workers > 1:
            prepare_multiprocess_metrics()
            serve_workers("hub.asgi:application", host=host, port=port, workers=workers)
        else:
            uvicorn.run("hub.asgi:application", host=host, port=port, **uvicorn_options())
