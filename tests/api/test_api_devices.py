"""The devices API against a served hub on real PostgreSQL: create (the token once), list, get, change, delete,
rotate, bulk import (JSON, CSV, all or nothing, every refused row named), importdevices, scopes and CSRF."""

import csv
import hashlib
import io
import os
from datetime import timedelta

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.utils import timezone

from devices.models import Device
from devices.services import device_authenticate
from storage.models import LatestValue
from tests.api.conftest import error

pytestmark = pytest.mark.usefixtures("postgres")


async def ingest(client, token: str) -> int:
    """A device's POST of one reading: its status (200 stored, 401 unknown token)."""
    return (await client.post(f"/api/v1/{token}/telemetry", content=b'{"temp": 21.5}')).status_code


async def test_a_created_device_gets_its_token_once_and_it_works(writer):
    """201 with the token; the registry keeps only its hash; the device can send with it; GET never shows it."""
    created = await writer.post("/api/v1/devices", json={"key": "th-1", "name": "Boiler", "labels": {"site": "north"}})
    assert created.status_code == 201, created.text
    body = created.json()
    token = body.pop("token")
    assert body | {"created": 0} == {
        "key": "th-1", "name": "Boiler", "labels": {"site": "north"}, "created": 0, "last_seen": None, "status": "never"
    }  # fmt: skip
    device = await Device.objects.aget(key="th-1")
    assert device.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert await ingest(writer, token) == 200
    shown = (await writer.get("/api/v1/devices/th-1")).json()
    assert "token" not in shown and token not in str(shown) and shown["status"] == "online"


async def test_create_refuses_bad_values_taken_keys_and_strangers(writer, reader, anonymous):
    """400 naming the field (the model's own messages), 409 for a taken key, 401 without a token, 403 read-only."""
    assert error(await writer.post("/api/v1/devices", json={"key": "no spaces"}), 400)["field"] == "key"
    bad_labels = await writer.post("/api/v1/devices", json={"key": "ok-1", "labels": {"site": "a,b"}})
    assert error(bad_labels, 400)["field"] == "labels"
    assert error(await writer.post("/api/v1/devices", json={"key": "ok-1", "colour": 1}), 400)["field"] == "colour"
    assert error(await writer.post("/api/v1/devices", json={"name": "no key"}), 400)["field"] == "key"
    assert error(await writer.post("/api/v1/devices", json={"key": 5}), 400)["field"] == "key"
    assert (
        error(
            await writer.post("/api/v1/devices", content=b"{nope", headers={"Content-Type": "application/json"}), 400
        )["code"]
        == "malformed_body"
    )
    assert (await writer.post("/api/v1/devices", json={"key": "ok-1"})).status_code == 201
    taken = error(await writer.post("/api/v1/devices", json={"key": "ok-1"}), 409)
    assert taken["code"] == "conflict" and taken["field"] == "key"
    assert error(await anonymous.post("/api/v1/devices", json={"key": "x-1"}), 401)["code"] == "unauthorized"
    assert error(await reader.post("/api/v1/devices", json={"key": "x-1"}), 403)["code"] == "insufficient_scope"
    assert await Device.objects.filter(key="x-1").aexists() is False


async def test_the_list_is_paged_and_filters_by_text_label_and_status(writer, reader):
    for i in range(25):
        labels = {"site": "north" if i % 2 else "south"}
        assert (await writer.post("/api/v1/devices", json={"key": f"d-{i:02}", "labels": labels})).status_code == 201
    await writer.post("/api/v1/devices", json={"key": "pump", "name": "Basement PUMP"})
    now = timezone.now()
    await Device.objects.filter(key__in=["d-00", "d-01"]).aupdate(last_seen=now)
    await Device.objects.filter(key="d-02").aupdate(last_seen=now - timedelta(hours=1))

    first = (await reader.get("/api/v1/devices", params={"page_size": 10})).json()
    assert first["count"] == 26 and [d["key"] for d in first["results"]] == [f"d-{i:02}" for i in range(10)]
    second = (await reader.get(first["next"])).json()
    assert [d["key"] for d in second["results"]] == [f"d-{i:02}" for i in range(10, 20)]

    async def keys(**params) -> list[str]:
        response = await reader.get("/api/v1/devices", params={**params, "page_size": 100})
        assert response.status_code == 200, response.text
        return [d["key"] for d in response.json()["results"]]

    assert await keys(q="pump") == ["pump"], "name, case-insensitive"
    assert await keys(q="d-1") == [f"d-{i}" for i in range(10, 20)]
    assert await keys(label="site=north", q="d-0") == ["d-01", "d-03", "d-05", "d-07", "d-09"]
    assert await keys(status="online") == ["d-00", "d-01"]
    assert await keys(status="offline") == ["d-02"]
    assert len(await keys(status="never")) == 23
    assert error(await reader.get("/api/v1/devices", params={"status": "asleep"}), 400)["parameter"] == "status"
    assert error(await reader.get("/api/v1/devices", params={"label": "site"}), 400)["parameter"] == "label"
    assert error(await reader.get("/api/v1/devices", params={"page": 9}), 404)["code"] == "not_found"


async def test_get_change_and_their_refusals(writer, reader):
    await writer.post("/api/v1/devices", json={"key": "d-1", "labels": {"site": "north"}})
    changed = await writer.patch(
        "/api/v1/devices/d-1", json={"name": "Roof", "labels": {"site": "south", "floor": "9"}}
    )
    assert changed.status_code == 200 and changed.json()["labels"] == {"site": "south", "floor": "9"}
    stored = await Device.objects.aget(key="d-1")
    assert (stored.name, stored.labels) == ("Roof", {"site": "south", "floor": "9"})
    assert (await writer.patch("/api/v1/devices/d-1", json={"name": "Attic"})).json()["labels"] == {
        "site": "south",
        "floor": "9",
    }, "only the fields given change"
    assert error(await writer.patch("/api/v1/devices/d-1", json={"labels": {"": "x"}}), 400)["field"] == "labels"
    assert error(await writer.patch("/api/v1/devices/d-1", json={"key": "d-2"}), 400)["field"] == "key"
    assert error(await writer.patch("/api/v1/devices/ghost", json={"name": "x"}), 404)["code"] == "unknown_device"
    assert error(await reader.get("/api/v1/devices/ghost"), 404)["code"] == "unknown_device"
    assert error(await reader.patch("/api/v1/devices/d-1", json={"name": "x"}), 403)["code"] == "insufficient_scope"


@pytest.mark.engines
async def test_delete_removes_the_device_its_readings_and_its_token(writer, reader, engine):
    token = (await writer.post("/api/v1/devices", json={"key": "gone"})).json()["token"]
    assert await ingest(writer, token) == 200
    assert await LatestValue.objects.filter(device__key="gone").aexists()
    assert error(await reader.delete("/api/v1/devices/gone"), 403)["code"] == "insufficient_scope"
    assert (await writer.delete("/api/v1/devices/gone")).status_code == 204
    assert error(await writer.get("/api/v1/devices/gone"), 404)["code"] == "unknown_device"
    assert error(await writer.delete("/api/v1/devices/gone"), 404)["code"] == "unknown_device"
    assert await ingest(writer, token) == 401
    from django.db import connection

    def readings_left() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM ingest_reading r LEFT JOIN devices_device d ON d.id = r.device_id"
                           " WHERE d.id IS NULL")  # fmt: skip
            return cursor.fetchone()[0]

    assert await sync_to_async(readings_left)() == 0


async def test_rotating_a_token_stops_the_old_one(writer, reader):
    old = (await writer.post("/api/v1/devices", json={"key": "rot"})).json()["token"]
    rotated = await writer.post("/api/v1/devices/rot/token")
    assert rotated.status_code == 200 and rotated.json()["key"] == "rot"
    new = rotated.json()["token"]
    assert await ingest(writer, old) == 401 and await ingest(writer, new) == 200
    assert error(await writer.post("/api/v1/devices/ghost/token"), 404)["code"] == "unknown_device"
    assert error(await reader.post("/api/v1/devices/rot/token"), 403)["code"] == "insufficient_scope"


async def test_bulk_json_creates_every_device_with_its_token(writer):
    devices = [{"key": f"b-{i}", "name": f"B {i}", "labels": {"batch": "1"}} for i in range(300)]
    response = await writer.post("/api/v1/devices/bulk", json={"devices": devices})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["created"] == 300 and [d["key"] for d in body["devices"]] == [d["key"] for d in devices]
    assert len({d["token"] for d in body["devices"]}) == 300
    for created in body["devices"][::50]:
        assert (await device_authenticate(token=created["token"])).key == created["key"]
    assert await Device.objects.filter(labels={"batch": "1"}).acount() == 300


async def test_bulk_csv_with_quoted_labels(writer):
    text = 'key,name,labels\nc-1,First,"site=north, model=tx"\nc-2,,\n'
    response = await writer.post("/api/v1/devices/bulk", content=text.encode(), headers={"Content-Type": "text/csv"})
    assert response.status_code == 201, response.text
    assert [d["key"] for d in response.json()["devices"]] == ["c-1", "c-2"]
    assert (await Device.objects.aget(key="c-1")).labels == {"site": "north", "model": "tx"}


async def test_bulk_is_all_or_nothing_and_names_every_refused_row(writer):
    await writer.post("/api/v1/devices", json={"key": "taken"})
    text = "key,name,labels\nfine-1,,\nbad key,,\ntaken,,\nfine-2,,site\nfine-1,,\n"
    response = await writer.post("/api/v1/devices/bulk", content=text.encode(), headers={"Content-Type": "text/csv"})
    body = error(response, 400)
    rows = [(r["row"], r["key"], r["field"]) for r in body["rows"]]
    assert rows == [(2, "bad key", "key"), (3, "taken", "key"), (4, "fine-2", "labels"), (5, "fine-1", "key")]
    assert "repeats row 1" in body["rows"][3]["message"]
    assert await Device.objects.filter(key__startswith="fine").aexists() is False, "nothing created"

    conflicts = await writer.post("/api/v1/devices/bulk", json={"devices": [{"key": "new"}, {"key": "taken"}]})
    assert error(conflicts, 409)["rows"] == [
        {"row": 2, "key": "taken", "field": "key", "message": "a device with the key 'taken' exists"}
    ]
    assert await Device.objects.filter(key="new").aexists() is False
    assert error(await writer.post("/api/v1/devices/bulk", json={"devices": "x"}), 400)["field"] == "devices"
    header = await writer.post("/api/v1/devices/bulk", content=b"name\nx\n", headers={"Content-Type": "text/csv"})
    assert error(header, 400)["field"] == "header"


async def test_bulk_over_its_limits_is_413(writer, settings):
    settings.HUB_API_BULK_MAX_DEVICES = 5
    many = await writer.post("/api/v1/devices/bulk", json={"devices": [{"key": f"m-{i}"} for i in range(6)]})
    assert error(many, 413)["code"] == "too_many_devices"
    settings.HUB_API_BULK_MAX_BYTES = 2048
    big = await writer.post("/api/v1/devices/bulk", json={"devices": [{"key": "k", "name": "n" * 4000}]})
    assert error(big, 413)["code"] == "payload_too_large"
    settings.HUB_API_MAX_BODY_BYTES = 1024
    assert error(await writer.post("/api/v1/devices", json={"key": "k", "name": "n" * 2000}), 413)
    assert await Device.objects.acount() == 0


async def test_a_bulk_import_larger_than_djangos_upload_limit_is_taken_whole(writer, settings):
    """Issue 22: the bulk import's own limit (HUB_API_BULK_MAX_BYTES, 32 MiB), not Django's 2.5 MiB, bounds its body:
    10,000 devices in a 3 MiB body are created, none cut off."""
    labels = {"site": "north-plant-building-a-floor-2", "model": "tx-9000-series-revision-c", "owner": "maintenance"}
    devices = [{"key": f"big-{i:05d}", "name": f"{i:05d}".ljust(200, "n"), "labels": labels} for i in range(10_000)]
    body = orjson.dumps({"devices": devices})
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE < len(body) < settings.HUB_API_BULK_MAX_BYTES, len(body)
    answer = await writer.post("/api/v1/devices/bulk", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 201, answer.text[:300]
    assert len(answer.json()["devices"]) == 10_000 and await Device.objects.acount() == 10_000


async def test_a_session_writes_only_with_its_csrf_token(browser):
    """A logged-in page may write, like a form: with the CSRF token (403 without); reads need none."""
    refused = error(await browser.post("/api/v1/devices", json={"key": "s-1"}), 403)
    assert refused["code"] == "csrf_failed"
    created = await browser.post("/api/v1/devices", json={"key": "s-1"}, headers={"X-CSRFToken": browser.csrf})
    assert created.status_code == 201, created.text
    assert (await browser.get("/api/v1/devices/s-1")).status_code == 200
    assert error(await browser.delete("/api/v1/devices/s-1"), 403)["code"] == "csrf_failed"


def test_importdevices_creates_all_and_writes_each_token_once(tmp_path, transactional_db):
    source = tmp_path / "devices.csv"
    with source.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["key", "name", "labels"])
        rows.writerows([f"i-{i}", f"Sensor {i}", "site=north, model=tx"] for i in range(1000))
    out = tmp_path / "tokens.csv"
    call_command("importdevices", str(source), "--tokens-out", str(out), stderr=io.StringIO())
    assert os.stat(out).st_mode & 0o777 == 0o600
    tokens = list(csv.DictReader(out.open()))
    assert len(tokens) == 1000 and tokens[0]["key"] == "i-0"
    device = Device.objects.get(key="i-999")
    assert device.token_hash == hashlib.sha256(tokens[-1]["token"].encode()).hexdigest()
    assert device.labels == {"site": "north", "model": "tx"} and device.name == "Sensor 999"
    with pytest.raises(CommandError, match="exists"):
        call_command("importdevices", str(source), "--tokens-out", str(out))


def test_importdevices_refuses_the_whole_file_naming_every_row(tmp_path, transactional_db):
    source = tmp_path / "devices.csv"
    source.write_text("key,name,labels\nok-1,,\nbad key,,\nok-2,,x=\nok-1,,\n")
    with pytest.raises(CommandError) as refused:
        call_command("importdevices", str(source), "--tokens-out", str(tmp_path / "t.csv"))
    message = str(refused.value)
    for row in ("row 2 ('bad key'): key", "row 3 ('ok-2'): labels", "row 4 ('ok-1'): key"):
        assert row in message, message
    assert not Device.objects.exists() and not (tmp_path / "t.csv").exists()
