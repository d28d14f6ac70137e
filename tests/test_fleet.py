"""The fleet page: login, a snapshot of every device in a fixed number of queries, live digests and alert
events on the fleet stream, device-provided names escaped."""

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alerts.models import AlertRule
from clients.viewer import StreamClosed, ViewerClient
from core.epoch import now_ms
from dashboards.fleet_page import fleet_query
from dashboards.selectors import FleetQuery, fleet_status
from devices.models import Device
from storage.models import LatestValue, Reading
from tests.conftest import person
from tests.inprocess import HandshakeRefused, viewer_in_process

pytestmark = pytest.mark.usefixtures("postgres")


def fleet_of(count: int, *, prefix: str = "fleet") -> list[Device]:
    devices = Device.objects.bulk_create(
        Device(key=f"{prefix}-{i:04d}", name=f"Sensor {i}", token_hash=f"{prefix}{i:04d}".ljust(64, "0"))
        for i in range(count)
    )
    now = datetime.now(UTC)
    LatestValue.objects.bulk_create(
        LatestValue(device=d, key=k, ts=now, value=float(i)) for i, d in enumerate(devices) for k in ("t", "h")
    )
    return devices


def test_pages_and_the_snapshot_need_a_login(client, transactional_db):
    for url in ("/", "/fleet.json"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
    person("op", password="secret-pw")
    response = client.post("/login/", {"username": "op", "password": "secret-pw"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/fleet.json").status_code == 302


def test_snapshot_costs_the_same_queries_for_ten_or_a_thousand_devices(transactional_db):
    fleet_of(10, prefix="small")
    with CaptureQueriesContext(connection) as small:
        assert len(fleet_status()["devices"]) == 10
    fleet_of(990, prefix="big")
    with CaptureQueriesContext(connection) as big:
        snapshot = fleet_status()
    assert len(snapshot["devices"]) == 100 and snapshot["matched"] == snapshot["total"] == 1000, "one page"
    assert snapshot["pages"] == 10
    assert len(big.captured_queries) == len(small.captured_queries) <= 6


def test_a_page_of_the_fleet_sorted_filtered_and_counted(transactional_db):
    """Counts by status over every matching device; sorted by status (worst alert, online, offline, never),
    last seen, rate or name, either way; filtered by key/name text, labels and status; paged."""
    devices = fleet_of(6)
    now = datetime.now(UTC)
    for i, d in enumerate(devices[:4]):  # 0 and 1 online, 2 and 3 offline, 4 and 5 never seen
        Device.objects.filter(pk=d.pk).update(last_seen=now - timedelta(seconds=10 + i * 100), labels={"site": "n"})
    Reading.objects.bulk_create(
        Reading(device=devices[1], key="t", ts=now - timedelta(seconds=s), value=1.0) for s in range(5)
    )
    LatestValue.objects.filter(device=devices[1], key="t").update(ts=now)
    rule = AlertRule.objects.create(
        name="r", device=devices[3], key="t", condition="gt", threshold=0, severity="warning"
    )
    rule.states.create(device=devices[3], state="firing", fired_at=now)

    def keys(**query) -> list[str]:
        return [d["key"] for d in fleet_status(FleetQuery(**query))["devices"]]

    snapshot = fleet_status()
    assert snapshot["counts"] == {"alerting": 1, "online": 2, "offline": 2, "never": 2}
    assert keys() == ["fleet-0003", "fleet-0000", "fleet-0001", "fleet-0002", "fleet-0004", "fleet-0005"]
    assert keys(sort="seen")[:4] == ["fleet-0000", "fleet-0001", "fleet-0002", "fleet-0003"], "newest first"
    assert keys(sort="rate")[0] == "fleet-0001" and keys(sort="rate", descending=True)[-1] == "fleet-0001"
    assert keys(sort="name", descending=True)[0] == "fleet-0005"
    assert keys(text="SENSOR 2") == ["fleet-0002"], "key or name, any case"
    assert keys(labels={"site": "n"}, status="offline") == ["fleet-0003", "fleet-0002"]
    assert keys(status="alerting") == ["fleet-0003"]
    assert keys(sort="name", rows=4, page=2) == ["fleet-0004", "fleet-0005"]
    assert fleet_status(FleetQuery(rows=4, page=9))["page"] == 2, "a page past the end shows the last"


def test_the_page_reads_its_choices_from_the_url_leniently(client, transactional_db):
    """The URL's choices reach the query; bad ones fall back (a bad label filter says why)."""
    assert fleet_query({"q": " boiler ", "label": "site=north", "status": "online", "sort": "-rate", "page": "3"}) == (
        FleetQuery(text="boiler", labels={"site": "north"}, status="online", sort="rate", descending=True, page=3),
        "",
    )
    query, problem = fleet_query({"label": "site", "status": "sideways", "sort": "color", "page": "x"})
    assert query == FleetQuery() and problem.startswith("label filter ignored")
    fleet_of(120)
    client.force_login(person("op"))
    page = client.get("/", {"sort": "name", "page": "2"}).content.decode()
    assert page.count('<tr data-key="') == 20 and "page 2 of 2" in page, "the first HTML holds the rows"
    assert client.get("/fleet.json", {"q": "fleet-011"}).json()["matched"] == 10


def test_snapshot_reports_last_seen_latest_values_rate_and_worst_alert(transactional_db):
    quiet, busy = fleet_of(2)
    now = datetime.now(UTC)
    Device.objects.filter(pk=busy.pk).update(last_seen=now)
    Reading.objects.bulk_create(
        [Reading(device=busy, key="t", ts=now - timedelta(seconds=s), value=1.0) for s in range(1, 8)]
        + [Reading(device=busy, key="h", ts=now - timedelta(seconds=s), value=1.0) for s in (5, 70, 80)]
    )
    LatestValue.objects.create(device=busy, key="state", ts=now, text="ok")
    for severity in ("info", "critical"):
        rule = AlertRule.objects.create(
            name=severity, device=busy, key="t", condition="gt", threshold=0, severity=severity
        )
        rule.states.create(device=busy, state="firing", fired_at=now)
    snapshot = {d["key"]: d for d in fleet_status()["devices"]}
    assert snapshot[busy.key]["per_minute"] == 8, "7 readings of t and 1 of h in the last minute"
    assert snapshot[quiet.key]["per_minute"] == 0
    assert snapshot[busy.key]["alert"] == "critical" and snapshot[quiet.key]["alert"] is None
    assert snapshot[busy.key]["seen"] == round(now.timestamp() * 1000) and snapshot[quiet.key]["seen"] is None
    assert snapshot[busy.key]["latest"]["state"][2] == "ok"
    assert snapshot[busy.key]["latest"]["t"][2] == 1.0


def test_the_favicon_is_served(client):
    """Browsers asking for /favicon.ico are sent to the static icon the pages link to."""
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("/dashboards/favicon.svg")


def test_device_names_reach_the_page_escaped(client, transactional_db):
    Device.objects.create(key="evil", name="<script>alert(1)</script>", token_hash="e" * 64)
    client.force_login(person("op"))
    page = client.get("/").content.decode()
    assert "<script>alert(1)" not in page
    assert "\\u003Cscript\\u003Ealert(1)" in page, "the name travels inside json_script, escaped"


async def test_fleet_stream_needs_a_session_and_our_origin(runtime, operator_cookie):
    with pytest.raises(StreamClosed) as closed:
        async with viewer_in_process(runtime, cookie=""):
            pass
    assert closed.value.code == 4401
    with pytest.raises(HandshakeRefused):
        async with viewer_in_process(runtime, cookie=operator_cookie, origin="http://evil.test"):
            pass


@pytest.mark.usefixtures("redis")
@pytest.mark.hub_settings(HUB_FLEET_DIGEST_SECONDS=0.1, HUB_ALERT_RULES_REFRESH_SECONDS=0)
async def test_fleet_stream_carries_digests_and_alert_events(live_hub, make_device, operator_cookie, settings):
    """A committed reading reaches the fleet stream as a digest (newest ts per key); a firing alert arrives too."""
    device = await sync_to_async(make_device)()
    await sync_to_async(AlertRule.objects.create)(
        name="hot", device_id=device.id, key="t", condition="gt", threshold=30.0, severity="critical"
    )
    async with ViewerClient.connect(live_hub.ws, cookie=operator_cookie) as fleet:
        ts = now_ms()
        async with httpx.AsyncClient(base_url=live_hub.http) as client:
            body = [{"ts": ts - 1, "values": {"t": 40.0}}, {"ts": ts, "values": {"t": 41.0, "state": "hot"}}]
            assert (await client.post(f"/api/v1/{device.token}/telemetry", json=body)).status_code == 200
        digest = alert = None
        async with asyncio.timeout(10):
            while digest is None or alert is None:
                message = await fleet.receive()
                if message["type"] == "fleet" and device.key in message["devices"]:
                    digest = message["devices"][device.key]
                elif message["type"] == "alert":
                    alert = message["event"]
    assert digest["latest"] == {"t": [ts, "t", 41.0], "state": [ts, "state", "hot"]}
    assert digest["n"] == 2, "numeric readings only"
    assert abs(digest["seen"] - now_ms()) < 10_000
    assert alert["type"] == "fired" and alert["device"] == device.key and alert["rule"]["severity"] == "critical"
