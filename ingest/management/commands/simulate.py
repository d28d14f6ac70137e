import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError

from ingest.simulator import run_simulation


class Command(BaseCommand):
    help = "Simulate devices streaming telemetry to a hub over WebSocket (tokens from --token or --token-file)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--url", default="ws://127.0.0.1:8000", help="hub base URL (ws:// or wss://)")
        parser.add_argument("--token", action="append", default=[], help="a device token (repeatable)")
        parser.add_argument("--token-file", help="a file with one device token per line")
        parser.add_argument("--rate", type=float, default=1.0, help="messages per second per device")

    def handle(self, *args, url: str, token: list[str], token_file: str | None, rate: float, **options) -> None:
        tokens = list(token)
        if token_file:
            with open(token_file) as f:
                tokens += [line.strip() for line in f if line.strip()]
        if not tokens:
            raise CommandError("give at least one --token or a --token-file")
        asyncio.run(self._run(url, tokens, rate))

    async def _run(self, url: str, tokens: list[str], rate: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_simulation(url, tokens, rate=rate, stop=stop)
