"""The rules page for real use (issue 25): rules edited, disabled, enabled and deleted on the page by those whose role
and scope allow it (audited), errors beside their own field, a default against flapping; one time format on the
alerts pages; the compare page's key links."""

import re
from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent
from alerts.engine import Transition, record
from alerts.evaluation import FIRED
from alerts.models import AlertRule, AlertState
from alerts.rules import rule_spec
from devices.services import DeviceIdentity, device_create
from storage.models import LatestValue
from tests.browser_pages import log_in
from tests.conftest import person

pytestmark = pytest.mark.usefixtures("postgres")


def reporting(key: str, site: str, *keys: str):
    """A device in `site` that has reported each of `keys` (rules over them are valid)."""
    device, _ = device_create(key=key, labels={"site": site})
    for reading in keys:
        LatestValue.objects.create(device_id=device.id, key=reading, ts=timezone.now(), value=20.0)
    return device


def hot(device, *, name: str = "hot", **fields) -> AlertRule:
    site = device.labels["site"]
    values = {"key": "t", "condition": "gt", "threshold": 30.0, "duration_seconds": 60} | fields
    return AlertRule.objects.create(name=name, device=device, scope=[f"site={site}"], **values)


def client_of(name: str, *, role: int = 2, scope: tuple[str, ...] = ()) -> Client:
    client = Client()
    client.force_login(person(name, role=role, scope=scope))
    return client


def form_of(rule: AlertRule, **changes) -> dict:
    """The rule's page form as a browser would post it, with `changes`."""
    fields = ("name", "device_pattern", "device_labels", "key", "kind", "condition", "threshold", "threshold_high",
              "duration_seconds", "hysteresis", "no_data_seconds", "severity", "webhook_url")  # fmt: skip
    values = {name: getattr(rule, name) for name in fields} | {"enabled": "on" if rule.enabled else ""}
    values |= {"device": rule.device_id or ""} | changes
    return {name: value for name, value in values.items() if value not in ("", None)}


def audited(action: str) -> list[dict]:
    return list(AuditEvent.objects.filter(action=action).order_by("id").values_list("detail", flat=True))


@pytest.fixture
def boiler(transactional_db):
    return reporting("boiler-1", "north", "t")


def test_an_operator_edits_a_rule_on_its_page_prefilled_and_the_change_is_audited(boiler):
    rule = hot(boiler)
    operator = client_of("ops")
    listed = operator.get("/alerts/rules/").content.decode()
    assert f'href="/alerts/rules/{rule.id}/"' in listed, "each rule links to its page"
    page = operator.get(f"/alerts/rules/{rule.id}/")
    assert page.status_code == 200
    assert re.search(r'<input type="number" name="threshold" value="30\.0"', page.content.decode()), "prefilled"

    saved = operator.post(f"/alerts/rules/{rule.id}/", form_of(rule, threshold=35, name="hotter"))
    assert saved.status_code == 302 and saved["Location"] == "/alerts/rules/"
    rule.refresh_from_db()
    assert (rule.threshold, rule.name, rule.device_id) == (35.0, "hotter", boiler.id)
    assert audited("rule.change") == [{"name": "hotter", "threshold": 35.0}]


def test_an_operator_disables_enables_and_deletes_a_rule_each_audited(boiler):
    rule = hot(boiler)
    operator = client_of("ops")
    listed = operator.get("/alerts/rules/").content.decode()
    assert f'action="/alerts/rules/{rule.id}/enabled"' in listed and 'value="false"' in listed
    assert re.search(rf'<details><summary>Delete.*?action="/alerts/rules/{rule.id}/delete"', listed, re.S), (
        "delete is a second click away, inside a <details>"
    )

    assert operator.post(f"/alerts/rules/{rule.id}/enabled", {"enabled": "false"}).status_code == 302
    rule.refresh_from_db()
    assert rule.enabled is False
    assert 'value="true"' in operator.get("/alerts/rules/").content.decode(), "now offered: Enable"
    assert operator.post(f"/alerts/rules/{rule.id}/enabled", {"enabled": "true"}).status_code == 302
    rule.refresh_from_db()
    assert rule.enabled is True
    assert audited("rule.change") == [{"name": "hot", "enabled": False}, {"name": "hot", "enabled": True}]

    assert operator.get(f"/alerts/rules/{rule.id}/delete").status_code == 405, "only a form's POST deletes"
    assert operator.post(f"/alerts/rules/{rule.id}/delete").status_code == 302
    assert not AlertRule.objects.filter(id=rule.id).exists()
    assert audited("rule.delete") == [{"name": "hot"}]


def test_a_viewer_sees_rules_but_may_not_change_them(boiler):
    rule = hot(boiler)
    viewer = client_of("watcher", role=1)
    listed = viewer.get("/alerts/rules/").content.decode()
    assert "hot" in listed and f"/alerts/rules/{rule.id}/" not in listed, "no controls they may not use"
    assert viewer.get(f"/alerts/rules/{rule.id}/").status_code == 403
    assert viewer.post(f"/alerts/rules/{rule.id}/", form_of(rule, threshold=35)).status_code == 403
    assert viewer.post(f"/alerts/rules/{rule.id}/enabled", {"enabled": "false"}).status_code == 403
    assert viewer.post(f"/alerts/rules/{rule.id}/delete").status_code == 403
    rule.refresh_from_db()
    assert (rule.threshold, rule.enabled) == (30.0, True)
    assert not AuditEvent.objects.filter(action__startswith="rule.").exists()


def test_a_scoped_operator_changes_their_rules_and_others_are_as_unknown(boiler):
    south = hot(reporting("boiler-9", "south", "t"), name="southern")
    north = hot(boiler, name="northern")
    operator = client_of("north", scope=("site=north",))
    assert "southern" not in operator.get("/alerts/rules/").content.decode()
    for asked in (operator.get(f"/alerts/rules/{south.id}/"),
                  operator.post(f"/alerts/rules/{south.id}/", form_of(south, threshold=35)),
                  operator.post(f"/alerts/rules/{south.id}/enabled", {"enabled": "false"}),
                  operator.post(f"/alerts/rules/{south.id}/delete"),
                  operator.get("/alerts/rules/999999/")):  # fmt: skip
        assert asked.status_code == 404
    south.refresh_from_db()
    assert (south.threshold, south.enabled) == (30.0, True)
    assert operator.post(f"/alerts/rules/{north.id}/enabled", {"enabled": "false"}).status_code == 302
    assert operator.post(f"/alerts/rules/{north.id}/delete").status_code == 302
    assert list(AlertRule.objects.values_list("name", flat=True)) == ["southern"]


def field_of(page: str, name: str) -> str:
    """The wrapper of the form field `name`: its label, input, help and errors."""
    found = [chunk for chunk in re.findall(r'<p class="field">(.*?)</p>', page, re.S) if f'id="id_{name}"' in chunk]
    assert len(found) == 1, (name, found)
    return found[0]


def test_an_error_is_shown_beside_its_own_field_and_the_input_points_at_it(boiler):
    """Not above the next field's label: in the field's own wrapper, after its input, linked to it."""
    rule = hot(boiler)
    operator = client_of("ops")
    refused = operator.post(f"/alerts/rules/{rule.id}/", form_of(rule, key="never-sent"))
    assert refused.status_code == 400
    page = refused.content.decode()
    key = field_of(page, "key")
    error = re.search(r'<span class="form-error" id="id_key_error">([^<]*)</span>', key)
    assert error and "has reported the key" in error.group(1), key
    field_input = re.search(r'<input [^>]*id="id_key"[^>]*>', key)
    assert field_input and field_input.start() < error.start(), "the error follows its input"
    assert 'aria-invalid="true"' in field_input.group(0)
    described = re.search(r'aria-describedby="([^"]*)"', field_input.group(0))
    assert described and "id_key_error" in described.group(1).split(), field_input.group(0)
    for other in ("kind", "name", "device_labels"):
        assert "form-error" not in field_of(page, other), other
    rule.refresh_from_db()
    assert rule.key == "t"

    created = operator.post("/alerts/rules/", form_of(rule, threshold="warm", name="new"))
    assert created.status_code == 400
    assert 'id="id_threshold_error"' in field_of(created.content.decode(), "threshold"), "the create form too"


def test_only_an_admin_may_set_a_rules_webhook_url_on_its_page(boiler):
    rule = hot(boiler)
    refused = client_of("ops").post(f"/alerts/rules/{rule.id}/", form_of(rule, webhook_url="https://example.com/h"))
    assert refused.status_code == 400
    assert "only admins may set" in field_of(refused.content.decode(), "webhook_url")
    rule.refresh_from_db()
    assert rule.webhook_url == ""


def test_new_rules_start_with_a_duration_and_a_rule_that_may_flap_says_so(boiler):
    """A threshold rule with neither duration nor hysteresis fires on every crossing of a noisy value; the page
    starts new rules at 60 s (the API keeps the model's 0) and flags the rules that have neither."""
    hot(boiler, name="steady")  # 60 s
    hot(boiler, name="twitchy", duration_seconds=0)
    hot(boiler, name="damped", duration_seconds=0, hysteresis=1.0)
    page = client_of("ops").get("/alerts/rules/").content.decode()
    assert re.search(r'<input type="number" name="duration_seconds" value="60"', field_of(page, "duration_seconds"))
    rows = re.findall(r"<tr><td>(\w+)</td>(.*?)</tr>", page, re.S)
    assert [name for name, _ in rows] == ["damped", "steady", "twitchy"]
    assert [name for name, row in rows if "may flap on a noisy value" in row] == ["twitchy"]


def test_the_alerts_page_times_name_utc_and_carry_iso_for_the_script(boiler):
    rule = hot(boiler)
    fired_ms = 1_700_000_000_123
    record([Transition(rule_spec(rule), DeviceIdentity(boiler.id, boiler.key), FIRED, fired_ms, 41.5)])
    assert AlertState.objects.get(rule=rule).fired_at == datetime.fromtimestamp(fired_ms / 1000, UTC)
    page = client_of("watcher", role=1).get("/alerts/").content.decode()
    times = re.findall(r'<time datetime="([^"]+)">([^<]+)</time>', page)
    assert times == [("2023-11-14T22:13:20Z", "2023-11-14 22:13:20 UTC")]
    assert '<script src="/static/dashboards/times.js"></script>' in page


def test_the_compare_page_marks_only_the_current_key_and_links_back_to_all_keys(boiler):
    for key in ("boiler-2", "boiler-3"):
        reporting(key, "north", "t", "h")
    LatestValue.objects.create(device_id=boiler.id, key="h", ts=timezone.now(), value=1.0)
    viewer = client_of("watcher", role=1)

    def current(query: str) -> tuple[list[str], list[str]]:
        page = viewer.get(f"/compare/?{query}").content.decode()
        summary = re.search(r'<p id="compare-summary">(.*?)</p>', page, re.S)
        assert summary, page
        links = re.findall(r'<a href="([^"]*)"([^>]*)>([^<]+)</a>', summary.group(1))
        return [text for _, attributes, text in links if "aria-current" in attributes], [t for *_, t in links]

    assert current("devices=boiler-*&keys=h&window=15m") == (["h"], ["All keys", "h", "t"])
    assert current("devices=boiler-*&window=15m") == (["All keys"], ["All keys", "h", "t"])
    assert current("devices=boiler-*&keys=&window=15m")[0] == ["All keys"], "the form's empty box: the default"
    assert current("devices=boiler-*&keys=h,t&window=15m")[0] == [], "a list typed in the box: no link is it"
    page = viewer.get("/compare/?devices=boiler-*").content.decode()
    assert re.search(r'<a href="\?devices=boiler-%2A&amp;window=15m"[^>]*>All keys</a>', page), "no keys: default"


@pytest.mark.serial
@pytest.mark.usefixtures("redis")
async def test_the_alerts_pages_times_read_in_local_time_with_the_zone_named(page, live_hub, operator):
    """In New York the alert fired at 22:13:20 UTC reads 5:13:20 PM EST, as the device page writes times."""
    device = await sync_to_async(reporting)("boiler-1", "north", "t")
    rule = await sync_to_async(hot)(device)
    fired_ms = 1_700_000_000_000
    transition = Transition(rule_spec(rule), DeviceIdentity(device.id, device.key), FIRED, fired_ms, 41.5)
    await sync_to_async(record)([transition])
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Emulation.setTimezoneOverride", {"timezoneId": "America/New_York"})
    await log_in(page, f"{live_hub.http}/alerts/")
    since = page.locator("main time").first
    assert await since.get_attribute("datetime") == "2023-11-14T22:13:20Z"
    shown = await since.text_content()
    device_page_format = await page.evaluate(
        'ms => new Date(ms).toLocaleString(undefined, {timeZoneName: "short"})', fired_ms
    )
    assert shown == device_page_format and "5:13:20" in shown and shown.endswith("EST"), shown
    assert await since.get_attribute("title") == "2023-11-14 22:13:20 UTC"
