import asyncio
import signal

from django.core.management.base import BaseCommand

from bridge.config import bridge_config
from bridge.worker import Bridge
from core.collector import collector_for_serving
from hub.roles import Role
from hub.runtime import hub_runtime


class Command(BaseCommand):
    help = "Run an MQTT bridge worker: devices/<KEY>/telemetry → the hub, acked to the broker after commit."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--url", help="broker URL (default HUB_MQTT_URL)")
        parser.add_argument("--client-id", help="stable client id of this worker (default HUB_MQTT_CLIENT_ID)")
        parser.add_argument("--protocol", type=int, choices=[4, 5], help="5 = MQTT 5 (default), 4 = MQTT 3.1.1")

    def handle(self, *args, url: str | None, client_id: str | None, protocol: int | None, **options) -> None:
        asyncio.run(self._run(url, client_id, protocol))

    async def _run(self, url: str | None, client_id: str | None, protocol: int | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)  # drain: flush, ack what was committed, disconnect
        config = bridge_config(url=url, client_id=client_id, protocol=protocol)
        async with hub_runtime(role=Role.BRIDGE) as runtime:
            assert runtime.ingest is not None  # noqa: S101 - a bridge writes
            with collector_for_serving():
                await Bridge(config, runtime.ingest, runtime.control).run(stop)
