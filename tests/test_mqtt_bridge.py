"""The MQTT bridge against real Mosquitto, PostgreSQL and Redis: at-least-once from broker to database,
stored exactly once, nothing PUBACKed lost across crashes, shared subscriptions split the load."""

import asyncio
import re
import signal
import threading
import time

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from paho.mqtt.enums import CallbackAPIVersion

from core.epoch import now_ms
from devices.models import Device
from tests.bridge_process import RUN, BridgeProcess
from tests.conftest import database_url_for_tests, free_port
from tests.mqtt_broker import MosquittoBroker
from tests.mqtt_devices import Publisher
from tests.tcp_proxy import TcpProxy
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("postgres", "redis", "mqtt")


@pytest.fixture
def bridges(tmp_path):
    started: list[BridgeProcess] = []

    def make(url: str, client_id: str, **env: str) -> BridgeProcess:
        bridge = BridgeProcess(tmp_path, url, f"{client_id}-{RUN}-{len(started)}", **env)
        started.append(bridge)
        return bridge

    yield make
    for bridge in started:
        bridge.stop(signal.SIGKILL)


@pytest.fixture
def broker(tmp_path):
    server = MosquittoBroker(tmp_path).start()
    yield server
    server.stop()


@sync_to_async
def stored_ts(device_ids: list[int]) -> tuple[dict[int, set[int]], int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint FROM ingest_reading WHERE device_id = ANY(%s)",
            [device_ids],
        )
        rows = cursor.fetchall()
    by_device: dict[int, set[int]] = {}
    for device_id, ts in rows:
        by_device.setdefault(device_id, set()).add(ts)
    return by_device, len(rows)


def base_ts() -> int:
    return now_ms() - 3_600_000


async def publish_all(publishers: list[Publisher], count: int, t0: int, *, pace: float = 0.0) -> None:
    for i in range(count):
        for p in publishers:
            p.publish(t0 + i, {"v": i})
        if pace:
            await asyncio.sleep(pace)  # pace: the devices publish over a while (the scenario, not a wait)
    await asyncio.gather(*(asyncio.to_thread(p.wait_all_acked) for p in publishers))


async def test_the_machines_broker_carries_readings_into_the_hub(make_device, bridges, mqtt):
    """Through the Mosquitto at 127.0.0.1:1883 (its stock configuration): paced QoS 1 messages all stored."""
    devices = [await sync_to_async(make_device)(f"sys{RUN}-{i}") for i in range(5)]
    await bridges(mqtt, "system").start().subscribed()
    publishers = [Publisher("127.0.0.1", 1883, d.key, client_id=f"pub-{RUN}-{d.key}") for d in devices]
    # Paced: the stock broker keeps only 20 unacked messages in flight per client and queues 1,000 more
    # before dropping (docs/mqtt.md explains the settings the hub's own broker config uses instead).
    await publish_all(publishers, 40, base_ts(), pace=0.01)

    async def all_stored() -> bool:
        return (await stored_ts([d.id for d in devices]))[1] == 5 * 40

    await eventually(all_stored, timeout=30, what="200 readings stored")
    for p in publishers:
        p.close()


async def test_every_qos1_message_is_stored_once_and_fanned_out(make_device, bridges, broker):
    """20 devices × 500 QoS 1 messages through Mosquitto with the hub's settings: all stored once, fanned out."""
    devices = [await sync_to_async(make_device)(f"mq{RUN}-{i}") for i in range(20)]
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for d in devices[:2]:
        await layer.group_add(f"device.{d.key}", channel)
    bridge = await bridges(broker.url, "main").start().subscribed()
    publishers = [Publisher("127.0.0.1", broker.port, d.key) for d in devices]
    t0 = base_ts()
    await publish_all(publishers, 500, t0)
    assert all(len(p.acked) == 500 for p in publishers)
    ids = [d.id for d in devices]

    async def all_stored() -> bool:
        return (await stored_ts(ids))[1] == 20 * 500

    await eventually(all_stored, timeout=60, what="10,000 readings stored")
    by_device, rows = await stored_ts(ids)
    assert rows == 10_000 and all(by_device[d.id] == set(range(t0, t0 + 500)) for d in devices)
    fanned: set[tuple[str, int]] = set()
    async with asyncio.timeout(20):
        while len(fanned) < 1000:
            message = await layer.receive(channel)
            fanned.update((message["device"], r[0]) for r in message["readings"])
    for p in publishers:
        p.close()
    await eventually(lambda: bridge.counters()["acked"] >= 10_000, what="the bridge to ack everything")


async def test_messages_published_while_no_bridge_runs_arrive_when_it_starts(make_device, bridges, broker):
    device = await sync_to_async(make_device)(f"offline{RUN}")
    bridge = await bridges(broker.url, "persist").start().subscribed()
    bridge.stop()  # the broker keeps the persistent session and queues for it
    publisher = Publisher("127.0.0.1", broker.port, device.key)
    t0 = base_ts()
    await publish_all([publisher], 300, t0)
    await bridge.start().subscribed()

    async def stored() -> bool:
        return (await stored_ts([device.id]))[1] == 300

    await eventually(stored, timeout=30, what="queued messages stored")
    publisher.close()


async def test_two_workers_split_a_shared_subscription(make_device, bridges, broker):
    devices = [await sync_to_async(make_device)(f"share{RUN}-{i}") for i in range(4)]
    one = await bridges(broker.url, "one").start().subscribed()
    two = await bridges(broker.url, "two").start().subscribed()
    publishers = [Publisher("127.0.0.1", broker.port, d.key) for d in devices]
    await publish_all(publishers, 250, base_ts())
    ids = [d.id for d in devices]

    async def complete() -> bool:
        return (await stored_ts(ids))[1] == 1000

    await eventually(complete, timeout=30, what="the union stored")
    await eventually(lambda: one.counters()["acked"] + two.counters()["acked"] == 1000, what="final counters")
    assert one.counters()["acked"] > 100 and two.counters()["acked"] > 100, "both workers took a share"
    for p in publishers:
        p.close()


async def test_bad_messages_are_acked_counted_reported_and_not_stored(make_device, bridges, broker):
    device = await sync_to_async(make_device)(f"bad{RUN}")
    metrics_port = free_port()
    bridge = await bridges(broker.url, "bad", HUB_MQTT_METRICS_PORT=str(metrics_port)).start().subscribed()
    errors: list[dict] = []
    suback = threading.Event()
    watcher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"err-{RUN}")
    watcher.on_message = lambda c, u, m: errors.append(orjson.loads(m.payload))
    watcher.on_subscribe = lambda *args: suback.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe(f"devices/{device.key}/errors")
    watcher.loop_start()
    await eventually(suback.is_set, what="the broker to confirm the error watcher's subscription")
    publisher = Publisher("127.0.0.1", broker.port, device.key)
    t0 = base_ts()
    publisher.publish(0, {}, payload=b"{not json")
    publisher.publish(1, {}, payload=b'{"x": ' + b"1" * 70_000 + b"}")  # over 64 KiB
    publisher.publish(2, {}, payload=b'{"ts": 1764000000, "values": {"x": 1}}')  # seconds
    publisher.publish(3, {}, topic="devices/nobody/telemetry", payload=b'{"x": 1}')
    publisher.publish(t0, {"ok": 1})  # and a good one after them: the bridge kept running
    await asyncio.to_thread(publisher.wait_all_acked)
    await eventually(lambda: bridge.counters()["acked"] == 5, what="all five acknowledged")
    counters = bridge.counters()
    assert counters["rejected"] == 4 and counters["stored"] == 1
    by_device, rows = await stored_ts([device.id])
    assert rows == 1 and by_device[device.id] == {t0}
    await eventually(lambda: len(errors) == 3, what="error reports on devices/<KEY>/errors")
    assert sorted(e["error"]["code"] for e in errors) == ["malformed_json", "payload_too_large", "ts_unit"]
    assert "unknown_device" in bridge.log.read_text()
    async with httpx.AsyncClient() as client:  # the same counters for Prometheus
        exposition = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    samples = dict(line.rsplit(" ", 1) for line in exposition.splitlines() if line and not line.startswith("#"))
    assert float(samples["hub_bridge_acked_total"]) == 5
    assert float(samples['hub_readings_stored_total{transport="mqtt"}']) == 1
    assert float(samples['hub_messages_rejected_total{code="unknown_device",transport="mqtt"}']) == 1
    assert float(samples["hub_bridge_lag_seconds"]) == 0 and float(samples["hub_bridge_inflight"]) == 0
    watcher.loop_stop()
    publisher.close()


async def test_a_database_outage_under_the_bridge_loses_nothing(make_device, bridges, broker):
    device = await sync_to_async(make_device)(f"dbcut{RUN}")
    settings_dict = connection.settings_dict
    proxy = await TcpProxy(settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432)).start()
    bridge = bridges(broker.url, "dbcut", HUB_DATABASE_URL=database_url_for_tests(host="127.0.0.1", port=proxy.port))
    await bridge.start().subscribed()
    publisher = Publisher("127.0.0.1", broker.port, device.key)
    t0 = base_ts()
    await publish_all([publisher], 100, t0)
    await eventually(lambda: bridge.counters()["acked"] >= 100, what="acks before the outage")
    await proxy.cut()
    await publish_all([publisher], 200, t0 + 100)
    await eventually(lambda: bridge.counters()["in"] >= 300, what="the bridge to hold the outage's messages")
    # A PUBACK before commit would follow receipt at once: two more status lines show there was none.
    lines = bridge.status_lines()
    await eventually(lambda: bridge.status_lines() >= lines + 2, what="two more bridge status lines")
    acked_during = bridge.counters()["acked"]
    assert acked_during < 300, "no PUBACK to the broker while the database is away"
    await proxy.restore()

    async def stored() -> bool:
        return (await stored_ts([device.id]))[1] == 300

    await eventually(stored, timeout=60, what="everything stored after recovery")
    by_device, rows = await stored_ts([device.id])
    lost = len(publisher.acked - by_device[device.id])
    print(f"ledger: published 300, PUBACKed {len(publisher.acked)}, stored {rows}, lost {lost}, duplicates 0")
    assert len(publisher.acked) == 300 and lost == 0
    publisher.close()
    await proxy.close()


async def test_a_deleted_devices_messages_are_acked_as_rejected(make_device, bridges, broker):
    """A device is deleted while two devices publish: its later messages are PUBACKed as unknown_device (not
    left unacknowledged, filling the bridge's receive window), and every message of the other is stored.

    The device cache is trusted for an hour here: only the commit's DeviceDeleted can tell the bridge."""
    keep, gone = [await sync_to_async(make_device)(f"{name}{RUN}") for name in ("keep", "gone")]
    window = {"HUB_MQTT_RECEIVE_MAXIMUM": "20", "HUB_MQTT_DEVICE_CACHE_SECONDS": "3600"}
    bridge = await bridges(broker.url, "deleted", **window).start().subscribed()
    publishers = [Publisher("127.0.0.1", broker.port, d.key) for d in (keep, gone)]
    t0 = base_ts()
    sending = asyncio.create_task(publish_all(publishers, 600, t0, pace=0.01))
    await eventually(lambda: bridge.counters()["stored"] > 200, timeout=30, what="both devices flowing")
    await sync_to_async(Device.objects.filter(key=gone.key).delete)()
    await sending
    assert [len(p.acked) for p in publishers] == [600, 600], "the broker took every message"

    async def keep_stored() -> bool:
        return (await stored_ts([keep.id]))[1] == 600

    await eventually(keep_stored, timeout=30, what="every message of the surviving device stored")
    await eventually(lambda: bridge.counters()["acked"] == 1200, timeout=30, what="the bridge to ack all 1,200")
    by_device, _ = await stored_ts([keep.id])
    counters = bridge.counters()
    print(
        f"ledger: published 1200, broker PUBACKed {sum(len(p.acked) for p in publishers)}, "
        f"surviving device stored {len(by_device[keep.id])}/600, bridge {counters}"
    )
    assert by_device[keep.id] == set(range(t0, t0 + 600))
    assert counters["in"] == 1200 and counters["stored"] + counters["rejected"] == 1200
    assert counters["rejected"] > 0 and counters["stored"] >= 600, "the deleted device's later messages rejected"
    assert "unknown_device" in bridge.log.read_text()
    for p in publishers:
        p.close()


def publish_poison(publisher: Publisher, t0: int, count: int) -> None:
    """Messages no database could store: NUL in text, and numbers whose hourly sums overflow a double."""
    for i in range(count):
        values = {"s": "a\x00b"} if i % 2 else {"x": 1e308}
        publisher.publish(t0 + i, {}, payload=orjson.dumps({"ts": t0 + i, "values": values}))


async def stored_within(device_id: int, count: int, seconds: float) -> float:
    started = time.monotonic()

    async def stored() -> bool:
        return (await stored_ts([device_id]))[1] == count

    await eventually(stored, timeout=seconds, what=f"{count} readings of the good device stored")
    return time.monotonic() - started


async def test_poison_messages_are_acked_as_rejected_and_never_stall_another_device(make_device, bridges, broker):
    """1,000 QoS 1 messages that can never be stored, from one device: each is PUBACKed as rejected (counted,
    logged naming the device and the reason), so they never fill the session's receive window; another
    device's messages are stored within 1 s, and again after a bridge restart that finds 1,000 more poison
    messages queued; the status line's inflight is what is really unacked."""
    poison, good = [await sync_to_async(make_device)(f"{name}{RUN}") for name in ("poison", "good")]
    bridge = await bridges(broker.url, "poison").start().subscribed()
    bad = Publisher("127.0.0.1", broker.port, poison.key)
    ok = Publisher("127.0.0.1", broker.port, good.key)
    t0 = base_ts()
    publish_poison(bad, t0, 1000)
    await asyncio.to_thread(bad.wait_all_acked)
    ok.publish(t0, {"v": 1})
    first = await stored_within(good.id, 1, 1.0)
    await eventually(lambda: bridge.counters()["acked"] == 1001, what="every message PUBACKed")
    assert bridge.counters()["rejected"] == 1000
    bridge.stop()
    publish_poison(bad, t0 + 1000, 1000)  # queued by the broker for the bridge's session
    ok.publish(t0 + 1, {"v": 2})
    await asyncio.to_thread(bad.wait_all_acked)
    await bridge.start().subscribed()
    second = await stored_within(good.id, 2, 1.0)
    await eventually(lambda: bridge.counters()["acked"] == 1001, what="every queued message PUBACKed")
    # The status line, then the interval's refusals, each naming the device (written one after the other: wait for
    # all of them, not for the status line to be the last).
    status = re.compile(r"acked 1001, inflight 0, lag 0\.000s")
    unstorable = re.compile(rf"refused \d+ message\(s\) of '{poison.key}': unstorable_value \(text values cannot")
    out_of_range = re.compile(rf"refused \d+ message\(s\) of '{poison.key}': value_out_of_range")
    await eventually(
        lambda: all(p.search(bridge.run_log()) for p in (status, unstorable, out_of_range)),
        what="a quiet status line and the refusals named",
    )
    print(f"good device stored {first:.3f} s after 1,000 poison messages, {second:.3f} s after a restart")
    assert (await stored_ts([poison.id]))[1] == 0
    bad.close()
    ok.close()


async def test_a_renamed_key_stops_working_within_the_cache_ttl(make_device, bridges, broker):
    """After a key is renamed the old topic is stored at most one cache TTL longer, then refused as an unknown
    device for good; the new topic is stored at once."""
    device = await sync_to_async(make_device)(f"old{RUN}")
    bridge = await bridges(broker.url, "renamed", HUB_MQTT_DEVICE_CACHE_SECONDS="1").start().subscribed()
    old = Publisher("127.0.0.1", broker.port, device.key)
    t0 = base_ts()
    await publish_all([old], 1, t0)
    await eventually(lambda: bridge.counters()["stored"] == 1, what="the old key looked up and cached")
    new_key = f"new{RUN}"
    await sync_to_async(Device.objects.filter(id=device.id).update)(key=new_key)
    await publish_all([old], 40, t0 + 1, pace=0.1)  # at least 4 s: the cached entry expires meanwhile
    new = Publisher("127.0.0.1", broker.port, new_key)
    await publish_all([new], 10, t0 + 100)
    await eventually(lambda: bridge.counters()["acked"] == 51, timeout=30, what="all 51 messages acked")
    by_device, _ = await stored_ts([device.id])
    via_old = sorted(ts for ts in by_device[device.id] if ts < t0 + 100)
    assert by_device[device.id] - set(via_old) == set(range(t0 + 100, t0 + 110)), "the new topic is stored"
    # Messages stored via the old key were published within a TTL (1 s, pace 0.1 s) of the rename, in order.
    assert via_old == list(range(t0, t0 + len(via_old))) and len(via_old) <= 1 + 11
    rejected = bridge.counters()["rejected"]
    print(f"rename: old topic stored {len(via_old) - 1}/40 after the rename, rejected {rejected}; new topic 10/10")
    assert rejected == 41 - len(via_old)
    old.close()
    new.close()


@pytest.mark.parametrize(
    ("shared", "broker_restart"), [("0", True), ("1", False)], ids=["plain+broker-restart", "shared"]
)
async def test_repeated_bridge_kills_lose_nothing_pubacked(make_device, bridges, broker, shared, broker_restart):
    """Devices with persistent sessions publish through three bridge SIGKILLs (and, with a plain subscription,
    a Mosquitto restart while the bridge is away): every message the broker PUBACKed is stored, once.

    A shared subscription is not tested across a broker restart: Mosquitto 2.0 does not restore it, so what
    devices publish before a bridge subscribes again is dropped (measured; docs/mqtt.md, docs/reliability.md)."""
    devices = [await sync_to_async(make_device)(f"chaos{RUN}-{shared}-{i}") for i in range(4)]
    bridge = await bridges(broker.url, "chaos", HUB_MQTT_SHARED=shared).start().subscribed()
    publishers = [
        Publisher("127.0.0.1", broker.port, d.key, client_id=f"chaos-{RUN}-{d.key}", persistent=True) for d in devices
    ]
    t0 = base_ts()
    sending = asyncio.create_task(publish_all(publishers, 600, t0, pace=0.01))
    for round_ in range(3):
        await eventually(lambda: bridge.counters()["acked"] > 50, timeout=30, what="the bridge under load")
        bridge.stop(signal.SIGKILL)
        if broker_restart and round_ == 1:
            broker.stop()  # SIGTERM: Mosquitto writes its persistence file, then comes back on the same port
            await asyncio.sleep(0.5)  # the scenario, not a wait: the broker stays away while devices publish
            broker.start()
        await bridge.start().subscribed()
    await sending
    acked = {d.id: p.acked for d, p in zip(devices, publishers, strict=True)}

    async def all_acked_stored() -> bool:
        by_device, _ = await stored_ts(list(acked))
        return all(acked[i] <= by_device.get(i, set()) for i in acked)

    try:
        await eventually(all_acked_stored, timeout=30, what="every PUBACKed message stored")
    finally:
        by_device, rows = await stored_ts(list(acked))
        pubacked = sum(map(len, acked.values()))
        lost = sum(len(acked[i] - by_device.get(i, set())) for i in acked)
        print(f"ledger: published {4 * 600}, PUBACKed {pubacked}, stored {rows}, lost {lost}, duplicates 0")
    assert rows == sum(len(s) for s in by_device.values()), "nothing twice"
    assert pubacked == 4 * 600, "paho resent what a restart left unacknowledged"
    for p in publishers:
        p.close()
