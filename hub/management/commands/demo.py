import asyncio
import contextlib
import time

import uvicorn
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from accounts.policy import Role as AccessRole
from accounts.users import user_create
from alerts.models import AlertRule
from clients.simulator import backfill_size, device_phase, history_backfill, run_simulation
from core.collector import collector_for_serving
from core.epoch import epoch_ms, now_ms
from devices.labels import device_labels_set
from devices.models import Device
from devices.services import DeviceIdentity, device_issue_token
from hub.asgi import HubApplication
from hub.roles import Role
from hub.runtime import hub_runtime
from hub.server import server_started, uvicorn_options
from ingest.writer import Writer
from storage.engines import engine
from storage.models import LatestValue

DEMO_USER = "demo"
# One person per role, and an operator limited to the north site (docs/security.md); each with the password "demo".
DEMO_PEOPLE = (
    ("viewer", AccessRole.VIEWER, ()),
    ("operator", AccessRole.OPERATOR, ()),
    ("admin", AccessRole.ADMIN, ()),
    ("north", AccessRole.OPERATOR, ("site=north",)),
)
DEMO_SITES = ("north", "north", "south")  # demo-1, demo-2: site=north; demo-3: site=south; then again
DEMO_RULE = "Demo: temperature high"


class Command(BaseCommand):
    help = (
        "Embedded demo: serve the hub, back-fill its simulated devices' past (--days) and stream them live "
        "(SQLite default only)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--devices", type=int, default=3)
        parser.add_argument("--rate", type=float, default=2.0, help="messages per second per device")
        parser.add_argument("--days", type=float, default=7.0, help="days of simulated history to back-fill")
        parser.add_argument("--access-log", action="store_true", help="log every request (off: a quiet terminal)")

    def handle(
        self, *args, host: str, port: int, devices: int, rate: float, days: float, access_log: bool, **options
    ) -> None:
        if not engine().embedded:
            raise CommandError("demo is for the embedded default; use `serve` and `simulate` otherwise")
        user_model = get_user_model()
        if not user_model.objects.filter(username=DEMO_USER).exists():
            user_model.objects.create_superuser(DEMO_USER, password=DEMO_USER)  # noqa: S106 - local demo only
        demo_people_ensure()
        keys = [f"demo-{i}" for i in range(1, devices + 1)]
        tokens = [device_issue_token(key=key, name=f"Demo sensor {key[5:]}") for key in keys]
        for i, key in enumerate(keys):
            device_labels_set(key=key, labels={"site": DEMO_SITES[i % len(DEMO_SITES)], "kind": "sensor"})
        demo_rule_ensure()
        self.stdout.write(
            f"Hub at http://{host}:{port}/  (log in as {DEMO_USER}, viewer, operator, admin or north; password "
            f"{DEMO_USER}); "
            f"{devices} simulated devices at {rate}/s. Ctrl-C stops."
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self._run(host, port, keys, tokens, rate, days, access_log))

    async def _run(
        self, host: str, port: int, keys: list[str], tokens: list[str], rate: float, days: float, access_log: bool
    ) -> None:
        """The runtime is built here and handed to the served app: the back-fill goes through its writer."""
        async with hub_runtime(role=Role.ALL) as runtime:
            assert runtime.writer is not None  # noqa: S101 - a process of every role writes
            app = HubApplication(Role.ALL, runtime=runtime)
            options = {**uvicorn_options(), "access_log": access_log}  # quiet unless asked: the demo's terminal
            server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
            with collector_for_serving():
                await self._serve(server, runtime.writer, keys, tokens, rate, days)

    async def _serve(
        self, server: uvicorn.Server, writer: Writer, keys: list[str], tokens: list[str], rate: float, days: float
    ) -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(server.serve())
        await server_started(server, serving)
        await self._backfill(writer, keys, days)
        sim = asyncio.create_task(
            run_simulation(
                f"ws://{server.config.host}:{server.config.port}",
                tokens,
                rate=rate,
                stop=stop,
                report_every=10,
                phases=[device_phase(key) for key in keys],
            )
        )
        await serving  # returns on Ctrl-C (uvicorn handles the signal)
        stop.set()
        await sim

    async def _backfill(self, writer: Writer, keys: list[str], days: float) -> None:
        """The devices' simulated past up to now, through the served hub's writer; only what is missing (a
        demo started again continues from its newest reading)."""
        end = now_ms()
        start = await asyncio.to_thread(backfill_starts, keys, since=end - int(days * 86_400_000))
        devices = await asyncio.to_thread(
            lambda: [DeviceIdentity(d.id, d.key) for d in Device.objects.filter(key__in=keys)]
        )
        began = time.monotonic()
        total = sum(backfill_size(start=s, end=end) for s in start.values())
        columns = [TextColumn("back-filling history"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
            task = progress.add_task("backfill", total=max(total, 1))
            written = await history_backfill(
                writer, devices, start=start, end=end, progress=lambda n: progress.advance(task, n)
            )
            progress.update(task, total=written, completed=written)
        self.stdout.write(f"back-filled {written} readings in {time.monotonic() - began:.1f} s")


def backfill_starts(keys: list[str], *, since: int) -> dict[str, int]:
    """Per device, where its back-fill starts: `since`, or its newest reading if that is later."""
    newest = {
        key: epoch_ms(ts)
        for key, ts in LatestValue.objects.filter(device__key__in=keys, key="temperature").values_list(
            "device__key", "ts"
        )
    }
    return {key: max(since, newest.get(key, since)) for key in keys}


def demo_people_ensure() -> None:
    """The demo's people, made once (a person changed since keeps the change)."""
    for name, role, scope in DEMO_PEOPLE:
        if get_user_model().objects.filter(username=name).exists():
            continue
        # Made without a password, then given one: "demo" is too weak for the validators, and this is a local demo.
        user = user_create(name, password=None, role=role, scope=scope)
        user.set_password(DEMO_USER)
        user.save(update_fields=["password"])


def demo_rule_ensure() -> None:
    """The demo's alert rule: the simulator's excursions fire it and it resolves as they pass (docs/alerts.md)."""
    AlertRule.objects.get_or_create(
        name=DEMO_RULE,
        defaults={
            "device_pattern": "demo-*",
            "key": "temperature",
            "condition": "gt",
            "threshold": 28.0,
            "duration_seconds": 10,
            "hysteresis": 1.0,
            "severity": "warning",
        },
    )
