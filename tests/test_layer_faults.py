"""The channel layer fails under open dashboards: Redis restarted without persistence, and the core layer's
group expiry. Ingest keeps storing; no dashboard stream stays open and deaf; viewers that reconnect with
`since` end with every stored reading exactly once."""

import asyncio
import contextlib
import time

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings

from clients.viewer import StreamClosed, ViewerClient
from tests.conftest import database_url_for_tests
from tests.ledger import Ledger, paced_ws_device, ws_device
from tests.redis_server import RedisServer
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("postgres", "redis")


class Viewer:
    """A dashboard client as the device page behaves: reconnects on close and asks for what it missed."""

    def __init__(self, hub, key: str, cookie: str) -> None:
        self.hub, self.key, self.cookie = hub, key, cookie
        self.received: list[int] = []  # every ts delivered, duplicates included
        self.closes: list[int | None] = []
        self.live_after_connect = 0  # live readings since the latest (re)connection
        self.caught_up = 0  # history answers received (one per connection)

    @property
    def newest(self) -> int:
        return max(self.received, default=0)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with ViewerClient.connect(
                    self.hub.ws, cookie=self.cookie, key=self.key, open_timeout=5
                ) as viewer:
                    self.live_after_connect = 0
                    await self._follow(viewer, stop)
            except StreamClosed as closed:
                self.closes.append(closed.code)
            except (OSError, TimeoutError, websockets.InvalidStatus):
                self.closes.append(None)
            await asyncio.sleep(0.2)  # reconnect backoff, as the device page has

    async def _follow(self, viewer: ViewerClient, stop: asyncio.Event) -> None:
        self.received.extend(r[0] for r in await viewer.catch_up(self.newest))
        self.caught_up += 1
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(viewer.receive(), 0.2)
            except TimeoutError:
                continue
            if message["type"] == "readings":
                self.received.extend(r[0] for r in message["readings"])
                self.live_after_connect += len(message["readings"])


async def hub_on(hub_process, redis_server: RedisServer, **env: str):
    """A hub subprocess on the test database and a private Redis, accepting the operator's session."""
    hub = hub_process(
        HUB_DATABASE_URL=database_url_for_tests(),
        HUB_SECRET_KEY=settings.SECRET_KEY,  # the operator's session must be valid in the hub process
        HUB_REDIS_URL=redis_server.url,
        **env,
    )
    return await hub.start().ready()


@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_redis_restart_under_open_dashboards(layer, make_device, hub_process, operator_cookie, tmp_path):
    redis_server = RedisServer(tmp_path).start()
    device = await sync_to_async(make_device)()
    hub = await hub_on(hub_process, redis_server, HUB_CHANNEL_LAYER=layer, HUB_STREAM_WATCHDOG_SECONDS="0.2")
    ledger, stop_device, stop_viewers = Ledger(), asyncio.Event(), asyncio.Event()
    viewers = [Viewer(hub, device.key, operator_cookie) for _ in range(3)]
    watching = [asyncio.create_task(v.run(stop_viewers)) for v in viewers]
    try:
        await eventually(lambda: all(v.caught_up for v in viewers), what="viewers caught up")
        device_sends = paced_ws_device(
            lambda: hub.ws, device.key, device.token, ledger, per_frame=5, every=0.02, until=stop_device
        )
        sending = asyncio.create_task(device_sends)
        await eventually(lambda: all(v.live_after_connect > 0 for v in viewers), what="live readings before")
        redis_server.stop()
        down_at = time.monotonic()
        await eventually(lambda: len([t for t in ledger.ack_times if t > down_at]) > 10, what="acks while down")
        redis_server.start()  # same port, empty: no groups, no subscriptions, a new run id
        restarted = len(ledger.acked.get(device.key, ()))
        await eventually(
            lambda: (
                all(v.live_after_connect > 0 and v.newest > 0 for v in viewers)
                and len(ledger.acked.get(device.key, ())) > restarted + 50
            ),
            timeout=30,
            what="live delivery again after the restart",
        )
        stop_device.set()
        await asyncio.wait_for(sending, 60)
        report = await ledger.reconcile()
        stored = ledger.acked[device.key]

        def complete() -> bool:
            return all(set(v.received) >= stored for v in viewers)

        await eventually(complete, timeout=30, what="every viewer to hold every stored reading")
    finally:
        stop_device.set()
        stop_viewers.set()
        await asyncio.gather(*watching, return_exceptions=True)
        redis_server.stop()
    assert report["lost"] == report["unexpected"] == report["duplicates"] == 0
    for v in viewers:
        print(f"viewer: {len(v.received)} readings received, closes {v.closes}")
        assert len(v.received) == len(set(v.received)), "no reading drawn twice"
        assert 4011 in v.closes or None in v.closes, "the interrupted stream was closed, not left deaf"


async def test_streams_stay_in_their_groups_past_the_core_layers_group_expiry(
    make_device, hub_process, operator_cookie, tmp_path
):
    redis_server = RedisServer(tmp_path).start()
    device = await sync_to_async(make_device)()
    hub = await hub_on(
        hub_process, redis_server, HUB_CHANNEL_LAYER="core", HUB_GROUP_EXPIRY="2", HUB_STREAM_REJOIN_SECONDS="0.5"
    )
    viewer, stop = Viewer(hub, device.key, operator_cookie), asyncio.Event()
    watching = asyncio.create_task(viewer.run(stop))
    ledger, done = Ledger(), asyncio.Event()
    try:
        await eventually(lambda: viewer.caught_up > 0, what="the viewer caught up")
        await asyncio.sleep(4)  # the scenario, not a wait: twice the group expiry passes with no traffic at all
        await ws_device(lambda: hub.ws, device.key, device.token, ledger, frames=20, per_frame=5, stop=done)
        await eventually(lambda: viewer.live_after_connect == 100, what="live readings after the expiry")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await watching
        redis_server.stop()
    assert viewer.closes == [], "delivered on the original connection"
