"""Alert rules, firing alerts and alert events through the API on real PostgreSQL: the rules page's validation
and messages, acknowledge once, events per device and time range."""

import html
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from alerts.engine import Transition, record
from alerts.evaluation import FIRED
from alerts.models import AlertEvent, AlertRule, AlertState
from alerts.rules import rule_spec
from core.epoch import epoch_ms, from_epoch_ms, now_ms
from devices.services import DeviceIdentity, device_create
from storage.models import LatestValue
from tests.api.conftest import error

pytestmark = pytest.mark.usefixtures("postgres")


@pytest.fixture
def boiler(transactional_db):
    """A device that has reported `t`, so rules over `t` are valid."""
    device, _ = device_create(key="boiler-1", labels={"site": "north"})
    LatestValue.objects.create(device_id=device.id, key="t", ts=timezone.now(), value=20.0)
    return device


HOT = {"name": "hot", "device": "boiler-1", "key": "t", "condition": "gt", "threshold": 30, "severity": "critical"}


async def test_rules_are_created_listed_changed_and_deleted(writer, reader, boiler):
    created = await writer.post("/api/v1/alert-rules", json=HOT)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["device"] == "boiler-1" and rule["threshold"] == 30.0 and rule["enabled"] is True
    assert rule["kind"] == "threshold" and rule["duration_seconds"] == 0, "the model's defaults"
    listed = (await reader.get("/api/v1/alert-rules")).json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == rule["id"]
    from accounts.models import AuditEvent

    audited = await AuditEvent.objects.filter(action="rule.create").alatest("id")
    assert (audited.object_type, audited.object_id) == ("alertrule", str(rule["id"])), "the rule, not its key `t`"
    assert (await reader.get(f"/api/v1/alert-rules/{rule['id']}")).json() == rule

    changed = await writer.patch(f"/api/v1/alert-rules/{rule['id']}", json={"threshold": 35, "enabled": False})
    assert changed.status_code == 200, changed.text
    stored = await AlertRule.objects.aget(id=rule["id"])
    assert (stored.threshold, stored.enabled, stored.name, stored.device_id) == (35.0, False, "hot", boiler.id)

    scoped = await writer.patch(
        f"/api/v1/alert-rules/{rule['id']}", json={"device": None, "device_labels": "site=north"}
    )
    assert scoped.status_code == 200 and scoped.json()["device"] is None

    assert error(await reader.delete(f"/api/v1/alert-rules/{rule['id']}"), 403)["code"] == "insufficient_scope"
    assert (await writer.delete(f"/api/v1/alert-rules/{rule['id']}")).status_code == 204
    assert error(await writer.get(f"/api/v1/alert-rules/{rule['id']}"), 404)["code"] == "unknown_rule"
    assert error(await writer.patch("/api/v1/alert-rules/999999", json={"name": "x"}), 404)["code"] == "unknown_rule"
    assert error(await writer.delete("/api/v1/alert-rules/999999"), 404)["code"] == "unknown_rule"


BAD_RULES = [
    ({"key": "never-sent"}, "key"),
    ({"condition": "outside", "threshold": 30, "threshold_high": 20}, "threshold_high"),
    ({"condition": "outside", "threshold": 10, "threshold_high": 20, "hysteresis": 6}, "hysteresis"),
    ({"threshold": None}, "threshold"),
    ({"kind": "no_data", "no_data_seconds": 0}, "no_data_seconds"),
    ({"device_pattern": "boiler-*"}, "device_pattern"),
    ({"device": "ghost"}, "device"),
    ({"severity": "apocalyptic"}, "severity"),
    ({"threshold": "warm"}, "threshold"),
    ({"webhook_url": "not a url"}, "webhook_url"),
]


@pytest.mark.parametrize(("change", "field"), BAD_RULES)
async def test_a_bad_rule_is_refused_with_the_rules_pages_message(writer, boiler, operator_user, change, field):
    """The API refuses what the page refuses, naming the same field with the same words."""
    refused = error(await writer.post("/api/v1/alert-rules", json={**HOT, **change}), 400)
    assert refused["field"] == field and refused["message"].startswith(f"{field}: "), refused

    def page_text() -> str:
        client = Client()
        client.force_login(operator_user)
        form = {**HOT, **change, "device": str(boiler.id) if change.get("device", "boiler-1") == "boiler-1" else "x"}
        form = {k: "" if v is None else v for k, v in form.items()} | {"enabled": "on", "hysteresis": change.get(
            "hysteresis", 0), "duration_seconds": 0, "no_data_seconds": change.get("no_data_seconds", 0)}  # fmt: skip
        response = client.post("/alerts/rules/", form)
        assert response.status_code == 400
        return html.unescape(response.content.decode())

    shown = await sync_to_async(page_text)()
    for message in refused["fields"][field]:
        assert message in shown, (message, field)
    assert await AlertRule.objects.acount() == 0


async def test_rule_writes_need_an_operator_allowed_to_write(reader, anonymous, boiler):
    assert error(await anonymous.get("/api/v1/alert-rules"), 401)["code"] == "unauthorized"
    assert error(await reader.post("/api/v1/alert-rules", json=HOT), 403)["code"] == "insufficient_scope"
    assert error(await reader.post("/api/v1/alert-rules", json={**HOT, "colour": "red"}), 403)
    assert (await reader.get("/api/v1/alert-rules")).status_code == 200


def fire(device, *, value: float = 41.5) -> AlertState:
    rule = AlertRule.objects.create(name="hot", device_id=device.id, key="t", condition="gt", threshold=30.0)
    record([Transition(rule_spec(rule), DeviceIdentity(device.id, device.key), FIRED, now_ms(), value)])
    return AlertState.objects.get(rule=rule)


async def test_firing_alerts_are_listed_and_acknowledged_once(writer, reader, boiler):
    state = await sync_to_async(fire)(boiler)
    firing = (await reader.get("/api/v1/alerts")).json()
    assert firing["count"] == 1
    listed = firing["results"][0]
    assert (listed["id"], listed["device"], listed["value"], listed["acknowledged_by"]) == (
        state.id,
        "boiler-1",
        41.5,
        None,
    )
    assert (await reader.get("/api/v1/alerts", params={"device": "other"})).json()["count"] == 0

    assert error(await reader.post(f"/api/v1/alerts/{state.id}/acknowledge"), 403)["code"] == "insufficient_scope"
    acked = await writer.post(f"/api/v1/alerts/{state.id}/acknowledge")
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "ops"
    assert await AlertEvent.objects.filter(type="acknowledged", by__username="ops").acount() == 1
    again = error(await writer.post(f"/api/v1/alerts/{state.id}/acknowledge"), 409)
    assert again["code"] == "not_acknowledgeable"
    assert error(await writer.post("/api/v1/alerts/999999/acknowledge"), 404)["code"] == "unknown_alert"
    assert await AlertEvent.objects.filter(type="acknowledged").acount() == 1, "recorded once"


async def test_alert_events_of_a_device_in_a_time_range(reader, boiler):
    state = await sync_to_async(fire)(boiler)
    t0 = now_ms() - 10 * 3_600_000
    for hour in range(10):
        await AlertEvent.objects.acreate(
            rule_id=state.rule_id, device_id=boiler.id, type="resolved", at=from_epoch_ms(t0 + hour * 3_600_000),
            value=float(hour), severity="warning",
        )  # fmt: skip
    url = "/api/v1/devices/boiler-1/alert-events"
    body = (await reader.get(url, params={"start": t0 + 3_600_000, "end": t0 + 4 * 3_600_000})).json()
    assert [e["value"] for e in body["events"]] == [3.0, 2.0, 1.0], "newest first, end exclusive"
    assert body["events"][0]["rule"]["name"] == "hot" and body["events"][0]["type"] == "resolved"
    recent = (await reader.get(url)).json()["events"]  # default: the last 24 hours
    assert recent[0]["type"] == "fired" and len(recent) == 11
    assert len((await reader.get(url, params={"limit": 2})).json()["events"]) == 2
    assert error(await reader.get(url, params={"start": 5, "end": 4}), 400)["parameter"] == "start"
    assert error(await reader.get(url, params={"limit": 10_001}), 400)["parameter"] == "limit"
    assert error(await reader.get("/api/v1/devices/ghost/alert-events"), 404)["code"] == "unknown_device"
    assert epoch_ms(timezone.now() - timedelta(days=1)) < recent[0]["at"]


async def test_only_admins_set_change_or_clear_a_rules_webhook(writer, runtime, boiler, settings):
    """An operator may change a rule that has a webhook without touching it, never set, change or clear it."""
    from api.credentials import api_token_create
    from tests.api.conftest import token_client
    from tests.conftest import person

    settings.HUB_ALERT_WEBHOOK_ALLOW = ["127.0.0.1/32"]  # no DNS in the test
    hook = {**HOT, "webhook_url": "http://127.0.0.1:9/ops"}
    assert error(await writer.post("/api/v1/alert-rules", json=hook), 400)["field"] == "webhook_url"
    admin = await sync_to_async(person)("boss", role=3)
    token = await sync_to_async(api_token_create)(user=admin, name="admin", scope="write")
    async with token_client(runtime, token) as boss:
        created = await boss.post("/api/v1/alert-rules", json=hook)
        assert created.status_code == 201, created.text
        url = f"/api/v1/alert-rules/{created.json()['id']}"
        for change in ({"webhook_url": ""}, {"webhook_url": "http://127.0.0.1:9/other"}):
            assert error(await writer.patch(url, json=change), 400)["field"] == "webhook_url", change
        assert (await writer.patch(url, json={"threshold": 33})).status_code == 200, "the URL kept as it is"
        stored = await AlertRule.objects.aget(id=created.json()["id"])
        assert (stored.webhook_url, stored.threshold) == ("http://127.0.0.1:9/ops", 33.0)
        assert (await boss.patch(url, json={"webhook_url": ""})).status_code == 200, "an admin clears it"
    assert (await AlertRule.objects.aget(id=stored.id)).webhook_url == ""
