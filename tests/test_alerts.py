"""Alerts: the state machine, live evaluation from committed readings, restarts, no-data, webhooks."""

import hashlib
import hmac

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError

from alerts.engine import FIRED, Transition, record
from alerts.evaluation import FIRING, OK, PENDING, RuleSpec, Tracked, threshold_step
from alerts.models import AlertEvent, AlertRule, AlertState, WebhookDelivery
from alerts.rules import rule_spec
from alerts.silence import silence_check
from core.epoch import now_ms
from devices.services import DeviceIdentity
from tests.conftest import person, served_hub
from tests.waiting import eventually
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.engines

SECRET = "webhook-secret"


def spec(**overrides) -> RuleSpec:
    base = dict(
        id=1, name="hot", kind="threshold", key="t", condition="gt", low=30.0, high=None, duration_ms=120_000,
        hysteresis=2.0, no_data_ms=0, severity="critical", device_id=None, pattern="", webhook_url="",
    )  # fmt: skip
    return RuleSpec(**{**base, **overrides})


def run(rule: RuleSpec, readings: list[tuple[int, float]], tracked: Tracked | None = None) -> list[str | None]:
    tracked = tracked or Tracked()
    return [threshold_step(rule, tracked, ts, v) for ts, v in readings]


def test_fires_only_after_every_reading_breaks_for_the_whole_duration():
    rule = spec()
    assert run(rule, [(0, 31), (60_000, 35), (119_999, 33), (120_000, 31)]) == ["pending", None, None, "fired"]
    # One reading back inside the limit restarts the span.
    assert run(rule, [(0, 31), (60_000, 29), (120_000, 31), (200_000, 31), (240_000, 31)]) == [
        "pending", "cleared", "pending", None, "fired",
    ]  # fmt: skip


def test_clears_only_past_the_hysteresis():
    rule = spec(duration_ms=0)
    tracked = Tracked()
    assert run(rule, [(0, 31), (1, 29), (2, 28.5), (3, 28)], tracked) == ["fired", None, None, "resolved"]
    assert tracked.state == OK


def test_band_and_late_readings():
    band = spec(condition="outside", low=10.0, high=20.0, hysteresis=1.0, duration_ms=0)
    assert run(band, [(0, 15), (1, 9.5), (2, 10.5), (3, 11), (4, 25)]) == [None, "fired", None, "resolved", "fired"]
    tracked = Tracked(state=PENDING, pending_since=100, last_ts=200)
    assert threshold_step(spec(), tracked, 150, 10.0) is None, "a late reading does not rewind the state"
    assert tracked.state == PENDING


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture
def alert_settings(settings, receiver):
    settings.HUB_ALERT_RULES_REFRESH_SECONDS = 0
    settings.HUB_ALERT_WEBHOOK_SECRET = SECRET
    settings.HUB_ALERT_WEBHOOK_POLL_SECONDS = 0.05
    settings.HUB_ALERT_WEBHOOK_BACKOFF_SECONDS = 0.05
    settings.HUB_ALERT_WEBHOOK_ALLOW = ["127.0.0.1"]  # the receiver is on loopback, which webhooks may not reach
    return settings


async def post(hub, token: str, ts: int, value: float) -> None:
    async with httpx.AsyncClient(base_url=hub.http) as client:
        response = await client.post(f"/api/v1/{token}/telemetry", json={"ts": ts, "values": {"t": value}})
        assert response.status_code == 200


def make_rule(device_id: int, **fields) -> AlertRule:
    rule = AlertRule(name="boiler hot", device_id=device_id, key="t", condition="gt", threshold=30.0, **fields)
    rule.full_clean()
    rule.save()
    return rule


def verified(headers: dict[str, str], body: bytes) -> dict:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Hub-Signature-256"], expected), "HMAC signature"
    return orjson.loads(body)


@pytest.mark.usefixtures("postgres")
async def test_threshold_alert_fires_once_resolves_and_webhooks_are_signed(
    alert_settings, receiver, live_hub, make_device
):
    """Readings over the limit for the whole duration fire once (one signed webhook, one event, announced
    on the channel layer); readings back past the hysteresis resolve it."""
    device = await sync_to_async(make_device)()
    t0 = now_ms() - 300_000
    await post(live_hub, device.token, t0, 20.0)
    rule = await sync_to_async(make_rule)(device.id, duration_seconds=60, hysteresis=2.0, webhook_url=receiver.url)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("alerts", channel)
    for i, value in enumerate([31, 32, 33, 34, 35]):  # 0 s … 80 s over the limit
        await post(live_hub, device.token, t0 + 1000 + i * 20_000, value)
    await eventually(lambda: len(receiver.received) == 1, what="the fired webhook")
    fired = verified(*receiver.received[0])
    assert fired["type"] == "fired" and fired["device"] == device.key and fired["value"] == 34.0
    assert fired["at"] == t0 + 1000 + 60_000
    announced = await layer.receive(channel)
    assert announced["event"]["type"] == "fired"

    await post(live_hub, device.token, t0 + 200_000, 29.0)  # inside, but within the hysteresis
    await post(live_hub, device.token, t0 + 210_000, 27.5)
    await eventually(lambda: len(receiver.received) == 2, what="the resolved webhook")
    assert verified(*receiver.received[1])["type"] == "resolved"
    events = await sync_to_async(lambda: list(AlertEvent.objects.filter(rule=rule).values_list("type", flat=True)))()
    assert sorted(events) == ["fired", "resolved"]


@pytest.mark.usefixtures("postgres")
async def test_a_restart_mid_span_keeps_the_state_and_never_repeats_a_firing(alert_settings, make_device):
    """The hub restarts twice mid-span (its engine's memory is gone, the database is not): the pending span
    fires once after the first restart, and after the second a reading still over the limit fires nothing."""
    device = await sync_to_async(make_device)()
    t0 = now_ms() - 300_000
    async with served_hub() as hub:
        await post(hub, device.token, t0, 20.0)
        rule = await sync_to_async(make_rule)(device.id, duration_seconds=60)
        await post(hub, device.token, t0 + 1000, 31.0)
        await eventually(lambda: _state(rule.id, device.id, PENDING), what="the pending span to be persisted")
    async with served_hub() as hub:
        await post(hub, device.token, t0 + 61_000, 32.0)
        await eventually(lambda: _state(rule.id, device.id, FIRING), what="fired after the restart")
    async with served_hub() as hub:
        await post(hub, device.token, t0 + 90_000, 33.0)  # still over: no second firing
        await post(hub, device.token, t0 + 95_000, 20.0)
        await eventually(lambda: _event_count("resolved", 1), what="the resolution")
    fired = await sync_to_async(AlertEvent.objects.filter(rule=rule, type="fired").count)()
    assert fired == 1


async def _state(rule_id: int, device_id: int, state: str) -> bool:
    row = await sync_to_async(AlertState.objects.filter(rule_id=rule_id, device_id=device_id).first)()
    return row is not None and row.state == state


@pytest.mark.django_db(transaction=True)
def test_a_firing_is_recorded_once_when_two_processes_see_it(make_device):
    device = make_device()
    from storage.models import LatestValue

    LatestValue.objects.create(device_id=device.id, key="t", ts="2026-01-01T00:00:00Z", value=1.0)
    rule = make_rule(device.id)
    transition = Transition(rule_spec(rule), DeviceIdentity(device.id, device.key), FIRED, now_ms(), 40.0)
    assert len(record([transition])) == 1
    assert record([transition]) == [], "the second process's compare-and-set records nothing"
    assert AlertEvent.objects.filter(rule=rule).count() == 1


@pytest.mark.django_db(transaction=True)
def test_no_data_fires_after_the_silence_and_resolves_when_heard(make_device):
    device = make_device()
    from storage.models import LatestValue

    heard = now_ms() - 600_000
    LatestValue.objects.create(device_id=device.id, key="t", ts=_dt(heard), value=1.0)
    rule = AlertRule(name="quiet", device_pattern=device.key, key="t", kind="no_data", no_data_seconds=300)
    rule.full_clean()
    rule.save()
    offline = AlertRule(name="offline", kind="offline", no_data_seconds=60, device_id=device.id)
    offline.full_clean()
    offline.save()
    now = now_ms()
    assert [(e["rule"]["name"], e["type"]) for e in silence_check(now_ms=now)] == [("quiet", "fired")]
    assert silence_check(now_ms=now + 1000) == [], "fires once"
    assert [(e["rule"]["name"], e["type"]) for e in silence_check(now_ms=now + 61_000)] == [("offline", "fired")]
    LatestValue.objects.filter(device_id=device.id).update(ts=_dt(now + 61_000))
    resolved = silence_check(now_ms=now + 62_000)
    assert [(e["rule"]["name"], e["type"]) for e in resolved] == [("quiet", "resolved")]


def _dt(ms: int):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC)


@pytest.mark.django_db(transaction=True)
def test_bad_rules_are_refused_with_a_message_naming_the_field(make_device):
    device = make_device()
    from storage.models import LatestValue

    LatestValue.objects.create(device_id=device.id, key="t", ts=_dt(now_ms()), value=1.0)
    cases = [
        ({"key": "nope", "condition": "gt", "threshold": 1}, "key"),
        ({"key": "t", "condition": "outside", "threshold": 5, "threshold_high": 5}, "threshold_high"),
        ({"key": "t", "condition": "outside", "threshold": 0, "threshold_high": 4, "hysteresis": 2}, "hysteresis"),
        ({"key": "t", "condition": "gt"}, "threshold"),
        ({"key": "t", "kind": "no_data"}, "no_data_seconds"),
    ]
    for fields, field in cases:
        with pytest.raises(ValidationError) as refused:
            AlertRule(name="bad", device_id=device.id, **fields).full_clean()
        assert field in refused.value.message_dict, (fields, refused.value.message_dict)


@pytest.mark.usefixtures("postgres")
@pytest.mark.hub_settings(HUB_ALERT_WEBHOOK_MAX_ATTEMPTS=3)
async def test_a_failing_webhook_is_retried_then_recorded_failed_and_evaluation_goes_on(
    alert_settings, live_hub, make_device
):
    failing = WebhookReceiver(status=500)
    try:
        device = await sync_to_async(make_device)()
        t0 = now_ms() - 100_000
        await post(live_hub, device.token, t0, 20.0)
        await sync_to_async(make_rule)(device.id, webhook_url=failing.url)
        await post(live_hub, device.token, t0 + 1, 40.0)
        await eventually(lambda: _delivery_status("failed"), what="the delivery to be recorded failed")
        assert len(failing.received) == 3
        await post(live_hub, device.token, t0 + 2, 10.0)  # evaluation continues: it resolves
        await eventually(lambda: _event_count("resolved", 1), what="resolution after the failed webhook")
    finally:
        failing.close()


async def _delivery_status(status: str) -> bool:
    return await sync_to_async(WebhookDelivery.objects.filter(status=status).exists)()


async def _event_count(kind: str, count: int) -> bool:
    return await sync_to_async(AlertEvent.objects.filter(type=kind).count)() == count


@pytest.mark.django_db(transaction=True)
def test_rule_page_creates_valid_rules_and_refuses_bad_ones(client, make_device):

    from storage.models import LatestValue

    device = make_device()
    LatestValue.objects.create(device_id=device.id, key="t", ts=_dt(now_ms()), value=1.0)
    client.force_login(person("op", password="pw"))
    base = {"name": "hot", "enabled": "on", "kind": "threshold", "severity": "critical", "hysteresis": "0"}
    base |= {"duration_seconds": "0", "no_data_seconds": "0", "device": str(device.id), "condition": "gt"}
    refused = client.post("/alerts/rules/", {**base, "key": "unknown", "threshold": "30"})
    assert refused.status_code == 400
    assert "has reported the key" in refused.content.decode()
    assert client.post("/alerts/rules/", {**base, "key": "t", "threshold": "30"}).status_code == 302
    assert AlertRule.objects.get().threshold == 30.0
    assert "hot" in client.get("/alerts/rules/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_open_alerts_page_lists_firing_alerts_and_records_acknowledgement(client, make_device):

    from storage.models import LatestValue

    device = make_device()
    LatestValue.objects.create(device_id=device.id, key="t", ts=_dt(now_ms()), value=1.0)
    rule = make_rule(device.id)
    record([Transition(rule_spec(rule), DeviceIdentity(device.id, device.key), FIRED, now_ms(), 41.5)])
    operator = person("op", password="pw")
    client.force_login(operator)
    page = client.get("/alerts/").content.decode()
    assert "boiler hot" in page and device.key in page and "41.5" in page
    state = AlertState.objects.get(rule=rule)
    assert client.post(f"/alerts/{state.id}/ack").status_code == 302
    state.refresh_from_db()
    assert state.acknowledged_by == operator
    assert AlertEvent.objects.filter(type="acknowledged", by=operator).count() == 1
    assert client.get("/alerts/", follow=False).status_code == 200
    client.logout()
    assert client.get("/alerts/").status_code == 302, "login required"
