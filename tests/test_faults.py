"""Faults against real processes: the database goes away under load, the hub is SIGTERMed under load.
Each test prints its ledger (sent / acked / stored / lost / unexpected / duplicates) and fails on any loss."""

import asyncio
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from tests.conftest import database_url_for_tests
from tests.ledger import Ledger, http_device, ws_device
from tests.tcp_proxy import TcpProxy
from tests.waiting import eventually

pytestmark = [pytest.mark.serial, pytest.mark.usefixtures("postgres"), pytest.mark.engines]


def queue_rows(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith("hub_writer_queue_rows "):
            return float(line.split()[1])
    return 0.0


async def test_database_outage_during_websocket_and_http_ingest(make_device, hub_process):
    """PostgreSQL cut away for 3 s under load: no acks while it is down, the queue stays bounded, clients that
    resend what was not acked lose nothing, and ingest recovers by itself."""
    ws_devices = [await sync_to_async(make_device)() for _ in range(4)]
    http_devices = [await sync_to_async(make_device)() for _ in range(2)]
    settings_dict = connection.settings_dict
    proxy = await TcpProxy(settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432)).start()
    hub = hub_process(
        HUB_DATABASE_URL=database_url_for_tests(host="127.0.0.1", port=proxy.port), HUB_WRITER_MAX_PENDING_ROWS="2000"
    )
    await hub.start().ready()
    ledger, stop = Ledger(), asyncio.Event()
    clients = [
        *(ws_device(lambda: hub.ws, d.key, d.token, ledger, frames=300, per_frame=10, stop=stop) for d in ws_devices),
        *(
            http_device(lambda: hub.http, d.key, d.token, ledger, posts=100, per_post=10, stop=stop)
            for d in http_devices
        ),
    ]
    running = asyncio.gather(*clients)
    await eventually(lambda: len(ledger.ack_times) > 20, what="acks before the outage")
    await proxy.cut()
    cut_at = time.monotonic()
    peak_queue = 0.0
    async with httpx.AsyncClient(base_url=hub.http) as client:
        while time.monotonic() - cut_at < 3:
            peak_queue = max(peak_queue, queue_rows((await client.get("/metrics")).text))
            await asyncio.sleep(0.2)  # the sampling interval of a 3 s outage (time itself is the scenario)
    acks_while_down = [t for t in ledger.ack_times if cut_at + 0.5 < t < cut_at + 3]
    print(f"outage: {len(ledger.ack_times)} acks before restore, peak writer queue {peak_queue:.0f} rows")
    await proxy.restore()
    try:
        await asyncio.wait_for(running, 90)
    finally:
        stop.set()
        await proxy.close()
    report = await ledger.reconcile()
    assert acks_while_down == [], "nothing is acknowledged while the database is unreachable"
    assert peak_queue <= 2000 + 100, f"the writer queue stays bounded (peak {peak_queue})"
    assert report["acked"] == report["sent"] == 4 * 3000 + 2 * 1000
    assert report["lost"] == report["unexpected"] == report["duplicates"] == 0


async def test_sigterm_under_load_commits_or_does_not_ack(make_device, hub_process):
    """The hub is SIGTERMed while devices stream and restarted: what was acked is stored, nothing twice."""
    devices = [await sync_to_async(make_device)() for _ in range(4)]
    hub = hub_process(HUB_DATABASE_URL=database_url_for_tests())
    await hub.start().ready()
    ledger, stop = Ledger(), asyncio.Event()
    running = asyncio.gather(
        *(ws_device(lambda: hub.ws, d.key, d.token, ledger, frames=400, per_frame=20, stop=stop) for d in devices)
    )
    await eventually(lambda: len(ledger.ack_times) > 50, what="load before SIGTERM")
    acked_before = sum(map(len, ledger.acked.values()))
    await asyncio.to_thread(hub.stop)  # SIGTERM: graceful shutdown drains the writer
    assert "writer drained" in hub.log.read_text()
    await hub.start().ready()
    try:
        await asyncio.wait_for(running, 90)
    finally:
        stop.set()
    report = await ledger.reconcile()
    assert acked_before > 0
    assert report["acked"] == report["sent"] == 4 * 400 * 20
    assert report["lost"] == report["unexpected"] == report["duplicates"] == 0
