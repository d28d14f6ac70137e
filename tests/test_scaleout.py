"""Scale-out on one backbone: two hub processes and two bridge workers share PostgreSQL, one MQTT broker and a
Redis channel layer sharded over two Redis servers; a dashboard on either process sees, live, the readings of
devices connected to the other process or arriving through either bridge."""

import asyncio
import contextlib
import os

import httpx
import pytest
import redis as redis_client
from asgiref.sync import sync_to_async
from django.conf import settings

from clients.viewer import ViewerClient
from core.epoch import now_ms
from tests.bridge_process import RUN, BridgeProcess
from tests.conftest import database_url_for_tests
from tests.ledger import Ledger, http_device, ws_device
from tests.mqtt_broker import MosquittoBroker
from tests.mqtt_devices import Publisher
from tests.redis_server import RedisServer
from tests.waiting import eventually

pytestmark = [pytest.mark.serial, pytest.mark.usefixtures("postgres", "redis")]


@pytest.fixture
def second_redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


async def watch(hub, cookie: str, key: str, seen: dict[str, set[int]]) -> None:
    async with ViewerClient.connect(hub.ws, cookie=cookie, key=key) as viewer:  # subscribed: the group is joined
        await viewer.catch_up(now_ms())
        seen.setdefault(key, set())
        async for readings in viewer.readings():
            seen[key].update(r[0] for r in readings)


async def mqtt_device(broker_port: int, key: str, ledger: Ledger, *, messages: int) -> None:
    """QoS 1 publishes with unique ts; the ledger's "acked" is what the broker PUBACKed."""
    publisher = Publisher("127.0.0.1", broker_port, key, client_id=f"scale-{RUN}-{key}")
    t0 = now_ms() - 10_800_000
    for i in range(messages):
        ledger.record_sent(key, [t0 + i])
        publisher.publish(t0 + i, {"v": i})
        await asyncio.sleep(0.002)  # pace: the device publishes over a while (the scenario, not a wait)
    await asyncio.to_thread(publisher.wait_all_acked)
    ledger.record_acked(key, sorted(publisher.acked))
    publisher.close()


@pytest.mark.usefixtures("mqtt")
async def test_two_hubs_and_two_bridges_share_fanout_over_sharded_redis(
    make_device, hub_process, operator_cookie, second_redis, redis, tmp_path
):
    env = {
        "HUB_DATABASE_URL": database_url_for_tests(),
        "HUB_REDIS_URL": f"{redis},{second_redis.url}",  # groups sharded over two Redis servers
        "HUB_CHANNEL_PREFIX": os.environ["HUB_CHANNEL_PREFIX"],
        "HUB_SECRET_KEY": settings.SECRET_KEY,  # one session store and key for every process
    }
    a, b = hub_process(**env), hub_process(**env)
    broker = MosquittoBroker(tmp_path).start()
    bridges = [
        BridgeProcess(tmp_path, broker.url, f"scale-{RUN}-{n}", HUB_REDIS_URL=env["HUB_REDIS_URL"]) for n in (1, 2)
    ]
    await asyncio.gather(a.start().ready(), b.start().ready(), *(bridge.start().subscribed() for bridge in bridges))
    devices = [await sync_to_async(make_device)() for _ in range(8)]
    seen_on_a: dict[str, set[int]] = {}
    seen_on_b: dict[str, set[int]] = {}
    watchers = [asyncio.create_task(watch(a, operator_cookie, d.key, seen_on_a)) for d in devices]
    watchers += [asyncio.create_task(watch(b, operator_cookie, d.key, seen_on_b)) for d in devices]
    await eventually(lambda: len(seen_on_a) == len(seen_on_b) == len(devices), what="every stream subscribed")
    second = await asyncio.to_thread(lambda: redis_client.Redis(port=second_redis.port).pubsub_channels())
    assert second, "groups and channels are sharded onto the second Redis too"
    ledger, stop = Ledger(), asyncio.Event()
    try:
        await asyncio.gather(
            *(ws_device(lambda: b.ws, d.key, d.token, ledger, frames=50, per_frame=10, stop=stop) for d in devices[:3]),
            *(
                http_device(lambda: a.http, d.key, d.token, ledger, posts=20, per_post=10, stop=stop)
                for d in devices[3:6]
            ),
            *(mqtt_device(broker.port, d.key, ledger, messages=300) for d in devices[6:]),
        )
        # MQTT's ack (PUBACK) comes from the broker: the bridges commit a moment later.
        await eventually(lambda: sum(w.counters()["stored"] for w in bridges) == 600, timeout=30, what="bridges")
        report = await ledger.reconcile()
        shares = [bridge.counters()["stored"] for bridge in bridges]
    finally:
        for bridge in bridges:
            bridge.stop()
        broker.stop()
    print(f"bridges stored {shares}")
    assert report["lost"] == report["unexpected"] == report["duplicates"] == 0
    assert report["acked"] == report["sent"] == 3 * 500 + 3 * 200 + 2 * 300
    assert all(shares), "both bridge workers took a share of the shared subscription"
    with contextlib.suppress(AssertionError):
        await eventually(
            lambda: all(seen_on_a[d.key] >= ledger.acked[d.key] <= seen_on_b[d.key] for d in devices), timeout=15
        )
    for d in devices:
        assert seen_on_a[d.key] == ledger.acked[d.key], f"dashboard on A misses readings of {d.key}"
        assert seen_on_b[d.key] == ledger.acked[d.key], f"dashboard on B misses readings of {d.key}"
    for w in watchers:
        w.cancel()
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{a.http}/readyz")).status_code == 200
