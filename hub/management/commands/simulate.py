"""`manage.py simulate`: devices streaming telemetry over WebSocket, with live rates and a final table."""

import asyncio
import signal
import time

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from clients.simulator import SimStats, run_simulation, status_line
from devices.services import device_issue_token


class Command(BaseCommand):
    help = (
        "Simulate devices streaming telemetry to a hub over WebSocket: --devices N creates (or re-keys) sim-1..N "
        "in this hub's registry; --token/--token-file drive existing devices of any hub at --url."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--url", default="ws://127.0.0.1:8000", help="hub base URL (ws:// or wss://)")
        parser.add_argument("--devices", type=int, default=0, help="create or re-key N local devices sim-1..sim-N")
        parser.add_argument("--token", action="append", default=[], help="a device token (repeatable)")
        parser.add_argument("--token-file", help="a file with one device token per line")
        parser.add_argument("--rate", type=float, default=1.0, help="messages per second per device")
        parser.add_argument("--seconds", type=float, default=0, help="stop after this long (default: Ctrl-C)")

    def handle(self, *args, url: str, devices: int, token: list[str], token_file: str | None, **options) -> None:
        tokens = list(token)
        if token_file:
            with open(token_file) as f:
                tokens += [line.strip() for line in f if line.strip()]
        tokens += [device_issue_token(key=f"sim-{i}", name=f"Simulated {i}") for i in range(1, devices + 1)]
        if not tokens:
            raise CommandError("give --devices N, or at least one --token or a --token-file")
        if options["rate"] <= 0:
            raise CommandError("--rate must be positive")
        console = Console()
        stats = asyncio.run(self._run(url, tokens, options["rate"], options["seconds"], console))
        console.print(_table(stats, len(tokens), final=True))
        self.stdout.write(status_line(stats, len(tokens)))  # the same figures as one greppable line

    async def _run(self, url: str, tokens: list[str], rate: float, seconds: float, console: Console) -> SimStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if seconds:
            loop.call_later(seconds, stop.set)
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            return await run_simulation(
                url,
                tokens,
                rate=rate,
                stop=stop,
                report_every=0.5,
                report=lambda s: live.update(_table(s, len(tokens))),
            )


def _table(stats: SimStats, devices: int, *, final: bool = False) -> Table:
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    table = Table(title=f"simulate: {devices} devices, {elapsed:.0f} s" + (" (done)" if final else ""))
    for column in ("sent", "sent/s", "acked", "acked/s", "unacked", "errors", "reconnects"):
        table.add_column(column, justify="right")
    table.add_row(
        str(stats.sent),
        f"{stats.sent / elapsed:.1f}",
        str(stats.acked),
        f"{stats.acked / elapsed:.1f}",
        str(stats.sent - stats.acked - stats.errors),
        str(stats.errors),
        str(stats.reconnects),
    )
    return table
