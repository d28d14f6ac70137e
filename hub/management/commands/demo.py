import asyncio
import contextlib

import uvicorn
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from devices.services import device_issue_token
from hub.server import server_started, uvicorn_options
from ingest.simulator import run_simulation

DEMO_USER = "demo"


class Command(BaseCommand):
    help = "Embedded demo: serve the hub and stream simulated devices into it (SQLite default only)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--devices", type=int, default=3)
        parser.add_argument("--rate", type=float, default=2.0, help="messages per second per device")

    def handle(self, *args, host: str, port: int, devices: int, rate: float, **options) -> None:
        if connections["default"].vendor != "sqlite":
            raise CommandError("demo is for the embedded default; use `serve` and `simulate` otherwise")
        user_model = get_user_model()
        if not user_model.objects.filter(username=DEMO_USER).exists():
            user_model.objects.create_superuser(DEMO_USER, password=DEMO_USER)  # noqa: S106 - local demo only
        tokens = [device_issue_token(key=f"demo-{i}", name=f"Demo sensor {i}") for i in range(1, devices + 1)]
        self.stdout.write(
            f"Hub at http://{host}:{port}/  (log in as {DEMO_USER} / {DEMO_USER}); "
            f"{devices} simulated devices at {rate}/s. Ctrl-C stops."
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self._run(host, port, tokens, rate))

    async def _run(self, host: str, port: int, tokens: list[str], rate: float) -> None:
        server = uvicorn.Server(uvicorn.Config("hub.asgi:application", host=host, port=port, **uvicorn_options()))
        stop = asyncio.Event()
        serving = asyncio.create_task(server.serve())
        await server_started(server, serving)
        sim = asyncio.create_task(run_simulation(f"ws://{host}:{port}", tokens, rate=rate, stop=stop, report_every=10))
        await serving  # returns on Ctrl-C (uvicorn handles the signal)
        stop.set()
        await sim
