"""The hub runtime: one composition root that starts in order or says why it cannot, after-commit consumers
that never hold each other (or acks) up, and a layering with no module-level singletons and no cycles."""

import asyncio
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

from alerts.engine import AlertEngine
from core.epoch import now_ms
from core.protocol import device_group
from core.state import NoRuntime, runtime_in
from devices.services import DeviceIdentity
from hub import asgi
from hub.roles import Role
from hub.runtime import HubRuntime
from ingest.commits import CommitQueue, Committed
from ingest.parsing import Reading
from ingest.writer import WriterClosed
from live.publisher import Publisher
from tests.conftest import database_url_for_tests
from tests.redis_server import RedisServer
from tests.tcp_proxy import TcpProxy
from tests.waiting import eventually, group_ready


def readings(n: int, *, start: int, key: str = "t") -> list[Reading]:
    return [Reading(start + i, key, float(i)) for i in range(n)]


# CommitQueue ----------------------------------------------------------------------------------------------


class Recorder:
    """A consumer that records what it takes; `gate` holds it inside consume() until the test opens it."""

    name = "recorder"

    def __init__(self) -> None:
        self.taken: list[Committed] = []
        self.shed_devices: list[set[DeviceIdentity]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.inside = asyncio.Event()

    async def consume(self, committed: Committed) -> None:
        self.inside.set()
        await self.gate.wait()
        self.taken.append(committed)

    async def shed(self, devices: set[DeviceIdentity]) -> None:
        self.shed_devices.append(devices)


A, B = DeviceIdentity(1, "a"), DeviceIdentity(2, "b")


async def test_a_consumer_that_falls_behind_gets_its_backlog_merged_in_commit_order():
    """Flushes offered while the consumer is busy arrive in one call, each device's readings in order, and
    the lists the writer shares with other consumers are never mutated."""
    recorder = Recorder()
    queue = CommitQueue(recorder, max_rows=1_000)
    queue.start()
    recorder.gate.clear()
    queue.offer({A: readings(2, start=0)})
    await asyncio.wait_for(recorder.inside.wait(), 5)  # the first flush is being consumed, slowly
    shared = readings(3, start=10)
    queue.offer({A: shared, B: readings(1, start=10)})
    queue.offer({A: readings(2, start=20)})
    assert queue.backlog_rows == 6
    recorder.gate.set()
    await eventually(lambda: len(recorder.taken) == 2, what="the merged backlog")
    merged = recorder.taken[1]
    assert [r.ts for r in merged[A]] == [10, 11, 12, 20, 21]
    assert [r.ts for r in merged[B]] == [10]
    assert [r.ts for r in shared] == [10, 11, 12], "the writer's list is not extended in place"
    await queue.close(timeout=1)


async def test_past_its_bound_a_consumer_sheds_the_oldest_backlog_and_is_told_which_devices():
    recorder = Recorder()
    queue = CommitQueue(recorder, max_rows=5)
    queue.start()
    recorder.gate.clear()
    queue.offer({A: readings(1, start=0)})
    await asyncio.wait_for(recorder.inside.wait(), 5)
    queue.offer({A: readings(4, start=10)})
    queue.offer({B: readings(3, start=10)})  # 4 + 3 > 5: A's 4 pending readings are shed
    recorder.gate.set()
    await eventually(lambda: len(recorder.taken) == 2, what="the kept flush")
    assert recorder.shed_devices == [{A}]
    assert list(recorder.taken[1]) == [B]
    await queue.close(timeout=1)


async def test_a_consumer_that_raises_keeps_getting_later_flushes():
    class Failing(Recorder):
        async def consume(self, committed: Committed) -> None:
            await super().consume(committed)
            raise RuntimeError("boom")

    failing = Failing()
    queue = CommitQueue(failing, max_rows=100)
    queue.start()
    queue.offer({A: readings(1, start=0)})
    await eventually(lambda: len(failing.taken) == 1, what="the first flush")
    queue.offer({A: readings(1, start=1)})
    await eventually(lambda: len(failing.taken) == 2, what="the second flush")
    await queue.close(timeout=1)


# The runtime ----------------------------------------------------------------------------------------------


@pytest.mark.serial
@pytest.mark.usefixtures("postgres", "redis")
async def test_a_slow_alert_consumer_changes_neither_ack_nor_dashboard_latency(make_device, monkeypatch):
    """With the alert engine taking 500 ms per batch, acks and the device group's messages still follow each
    commit within milliseconds; the engine gets the same readings later, merged."""
    evaluated: list[int] = []

    async def slow_consume(self: AlertEngine, committed: Committed) -> None:
        await asyncio.sleep(0.5)  # the scenario, not a wait: an alert engine that takes 500 ms per batch
        evaluated.extend(r.ts for rs in committed.values() for r in rs)

    monkeypatch.setattr(AlertEngine, "consume", slow_consume)
    device = await sync_to_async(make_device)()
    ident = DeviceIdentity(device.id, device.key)
    listener = RedisPubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    channel = await listener.new_channel()
    await listener.group_add(device_group(device.key), channel)
    await group_ready(listener, device_group(device.key), channel)
    from hub.runtime import hub_runtime

    async with hub_runtime() as runtime:
        t0 = now_ms() - 10_000
        ack_ms, fanout_ms = [], []
        for i in range(20):
            sent = time.monotonic()
            future = await runtime.writer.submit(ident, readings(5, start=t0 + 10 * i))
            await asyncio.wait_for(future, 5)
            ack_ms.append((time.monotonic() - sent) * 1000)
            async with asyncio.timeout(5):
                message = await listener.receive(channel)
            fanout_ms.append((time.monotonic() - sent) * 1000)
            assert message["type"] == "readings.batch" and [r[0] for r in message["readings"]][0] == t0 + 10 * i
        await eventually(lambda: len(evaluated) == 100, timeout=20, what="the alert engine to see every reading")
        alerts_queue = runtime.consumers[1]
        assert alerts_queue.consumer is runtime.alerts
    print(f"ack ms max {max(ack_ms):.1f}, device→group ms max {max(fanout_ms):.1f}")
    assert max(fanout_ms) < 250, fanout_ms
    assert max(ack_ms) < 250, ack_ms
    assert sorted(evaluated) == sorted(t0 + 10 * i + j for i in range(20) for j in range(5))
    await listener.flush()


async def lifespan_messages(*startup_and_shutdown: str, state: dict | None = None) -> list[dict]:
    """Drive the ASGI app's lifespan directly, with `state` as the server's lifespan state; returns what it sent."""
    incoming = asyncio.Queue()
    for kind in startup_and_shutdown:
        incoming.put_nowait({"type": f"lifespan.{kind}"})
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "state": state if state is not None else {}}
    await asyncio.wait_for(asgi.application(scope, incoming.get, send), 30)
    return sent


async def test_a_part_that_cannot_be_built_fails_startup_with_the_reason(transactional_db, monkeypatch):
    def broken(self, *args, **kwargs) -> None:
        raise RuntimeError("the channel layer is misconfigured")

    monkeypatch.setattr(Publisher, "__init__", broken)
    sent = await lifespan_messages("startup")
    assert sent == [{"type": "lifespan.startup.failed", "message": "RuntimeError: the channel layer is misconfigured"}]


async def test_the_lifespan_hands_the_runtime_to_connections_and_stops_it(transactional_db):
    """The runtime goes into the lifespan state (which uvicorn copies into every connection's scope), started;
    on shutdown it is stopped: its writer refuses what comes after."""
    state: dict = {}
    incoming: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await incoming.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(asgi.application({"type": "lifespan", "state": state}, incoming.get, send))
    await eventually(lambda: bool(sent), what="the start-up answer")
    assert sent == [{"type": "lifespan.startup.complete"}]
    runtime = runtime_in({"state": state})
    assert isinstance(runtime, HubRuntime) and runtime.role is Role(settings.HUB_ROLE)
    assert runtime.writer is not None and not runtime.writer._closing
    await incoming.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 30)
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    with pytest.raises(WriterClosed):
        await runtime.writer.submit(DeviceIdentity(1, "a"), readings(1, start=0))


async def test_a_server_without_lifespan_state_fails_startup_naming_it(transactional_db):
    incoming: asyncio.Queue = asyncio.Queue()
    await incoming.put({"type": "lifespan.startup"})
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(asgi.application({"type": "lifespan"}, incoming.get, send), 30)
    assert sent[0]["type"] == "lifespan.startup.failed" and "lifespan state" in sent[0]["message"]


def test_a_connection_without_a_runtime_is_told_how_to_get_one():
    with pytest.raises(NoRuntime, match="lifespan"):
        runtime_in({"type": "websocket"})


@pytest.mark.usefixtures("postgres", "redis")
async def test_a_hub_started_while_postgres_and_redis_are_down_becomes_ready_by_itself(
    make_device, hub_process, tmp_path
):
    """Started with both unreachable: alive, /readyz names both; once they are back it is ready and ingests."""
    device = await sync_to_async(make_device)()
    proxy = await TcpProxy("127.0.0.1", 5432).start()
    port = proxy.port
    await proxy.cut()
    redis_server = RedisServer(tmp_path)
    hub = hub_process(
        HUB_DATABASE_URL=database_url_for_tests(host="127.0.0.1", port=port), HUB_REDIS_URL=redis_server.url
    )
    await hub.start().ready()
    async with httpx.AsyncClient(base_url=hub.http, timeout=10) as client:
        try:
            response = await client.get("/readyz")
            checks = response.json()["checks"]
            assert response.status_code == 503 and checks["database"] != "ok" and checks["channel_layer"] != "ok"
            proxy.port = port
            await proxy.start()
            redis_server.start()

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout=30, what="ready once PostgreSQL and Redis are back")
            posted = await client.post(f"/api/v1/{device.token}/telemetry", content=b'{"t": 1}')
            assert posted.status_code == 200, posted.text
        finally:
            redis_server.stop()
            await proxy.close()
