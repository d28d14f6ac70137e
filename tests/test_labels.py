"""Device labels: validated on every write, edited as text in the admin, selecting devices on PostgreSQL, and
scoping alert rules (the engine, the no-data timer, threshold lines and the rule form alike)."""

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError

from accounts.policy import Actor, Role
from accounts.registry_admin import DeviceForm as ScopedDeviceForm
from alerts.models import AlertEvent, AlertRule
from alerts.rules import rule_problems, rule_spec
from alerts.selectors import alert_thresholds_for_device
from core.epoch import now_ms
from devices.labels import device_labels_set, devices_labelled, labels_parse, labels_text
from devices.models import Device
from storage.models import LatestValue
from tests.conftest import person
from tests.test_alerts import post, spec
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("postgres")


def test_labels_parse_from_text_and_back():
    assert labels_parse(" site=north , model=tx-200,") == {"site": "north", "model": "tx-200"}
    assert labels_text({"site": "north", "model": "tx-200"}) == "model=tx-200, site=north"
    assert labels_parse("") == {}
    for bad in ("site", "=north", "site=", "sité=north", "a" * 64 + "=x", "site=nor\nth"):
        with pytest.raises(ValidationError):
            labels_parse(bad)


def test_labels_are_validated_on_every_write_and_select_devices(make_device):
    """device_labels_set and the admin form refuse bad labels; devices_labelled selects by every pair."""
    north, south, bare = (make_device(k) for k in ("n-1", "s-1", "x-1"))
    device_labels_set(key=north.key, labels={"site": "north", "tier": "1"})
    device_labels_set(key=south.key, labels={"site": "south", "tier": "1"})
    with pytest.raises(ValidationError):
        device_labels_set(key=bare.key, labels={"site": 5})

    def keys(**selector: str) -> list[str]:
        return list(devices_labelled(Device.objects.order_by("key"), selector).values_list("key", flat=True))

    assert keys(tier="1") == ["n-1", "s-1"]
    assert keys(tier="1", site="south") == ["s-1"]
    assert keys(site="east") == [] and keys() == ["n-1", "s-1", "x-1"]

    DeviceForm = type("DeviceForm", (ScopedDeviceForm,), {"actor": Actor(role=Role.OPERATOR)})  # the admin's own
    form = DeviceForm(
        {"key": bare.key, "name": "", "labels": "room=boiler, floor=2"}, instance=Device.objects.get(key=bare.key)
    )
    assert form.is_valid(), form.errors
    form.save()
    assert Device.objects.get(key=bare.key).labels == {"room": "boiler", "floor": "2"}
    assert DeviceForm(instance=Device.objects.get(key=bare.key)).initial["labels"] == "floor=2, room=boiler"
    assert not DeviceForm({"key": bare.key, "labels": "room"}, instance=Device.objects.get(key=bare.key)).is_valid()


def test_a_rule_scoped_by_label_applies_to_labelled_devices_only(make_device):
    rule = spec(labels=(("site", "north"),), pattern="boiler-*")
    assert rule.applies_to(1, "boiler-1", {"site": "north", "x": "y"})
    assert not rule.applies_to(1, "boiler-1", {"site": "south"})
    assert not rule.applies_to(1, "boiler-1", None)
    assert not rule.applies_to(1, "pump-1", {"site": "north"}), "the pattern still applies"
    assert spec(labels=(("site", "north"),), device_id=1).applies_to(1, "x", None), "a device rule ignores labels"

    north, south = make_device("boiler-1"), make_device("boiler-2")
    device_labels_set(key=north.key, labels={"site": "north"})
    LatestValue.objects.create(device_id=south.id, key="t", ts="2030-01-01T00:00:00Z", value=1.0)
    model = AlertRule(name="hot north", device_labels="site=north", key="t", condition="gt", threshold=30)
    assert rule_problems(model) == {"key": "no device in this rule's scope has reported the key 't'"}
    assert "device_labels" in rule_problems(
        AlertRule(name="x", device_labels="site", key="t", condition="gt", threshold=1)
    )
    LatestValue.objects.create(device_id=north.id, key="t", ts="2030-01-01T00:00:00Z", value=1.0)
    assert rule_problems(model) == {}
    model.save()
    assert rule_spec(model).labels == (("site", "north"),)
    assert [
        line["rule"]
        for line in alert_thresholds_for_device(device_id=north.id, device_key=north.key, labels={"site": "north"})
    ] == ["hot north"]
    assert alert_thresholds_for_device(device_id=south.id, device_key=south.key, labels={}) == []


@pytest.mark.hub_settings(HUB_ALERT_RULES_REFRESH_SECONDS=0)
async def test_the_engine_fires_a_label_scoped_rule_on_the_labelled_device_only(live_hub, make_device, settings):
    """Two devices break the limit; only the one with the rule's label fires."""
    north, south = await sync_to_async(make_device)("boiler-n"), await sync_to_async(make_device)("boiler-s")
    await sync_to_async(device_labels_set)(key=north.key, labels={"site": "north"})
    await sync_to_async(AlertRule.objects.create)(
        name="hot north", device_labels="site=north", key="t", condition="gt", threshold=30.0
    )
    ts = now_ms()
    for device in (south, north):
        await post(live_hub, device.token, ts, 35.0)

    async def fired() -> list[str]:
        return await sync_to_async(lambda: list(AlertEvent.objects.values_list("device__key", flat=True)))()

    await eventually(lambda: _nonempty(fired), what="the north boiler's alert")
    await post(live_hub, north.token, ts + 1, 36.0)  # the south reading was evaluated before it
    assert await fired() == ["boiler-n"]


async def _nonempty(query) -> bool:
    return bool(await query())


def test_the_rule_form_takes_a_label_scope(client, make_device):
    """The rules page creates a label-scoped rule and lists its scope; bad labels are refused by name."""

    device = make_device("boiler-9")
    device_labels_set(key=device.key, labels={"site": "north"})
    LatestValue.objects.create(device_id=device.id, key="t", ts="2030-01-01T00:00:00Z", value=1.0)
    client.force_login(person("op"))
    rule = {"name": "hot north", "enabled": "on", "device_labels": "site=north", "key": "t", "kind": "threshold",
            "condition": "gt", "threshold": "30", "duration_seconds": "0", "hysteresis": "0", "no_data_seconds": "0",
            "severity": "warning"}  # fmt: skip
    assert client.post("/alerts/rules/", rule).status_code == 302
    assert AlertRule.objects.get(name="hot north").device_labels == "site=north"
    assert "all devices with site=north" in client.get("/alerts/rules/").content.decode()
    refused = client.post("/alerts/rules/", {**rule, "name": "bad", "device_labels": "north"})
    assert refused.status_code == 400 and "is not name=value" in refused.content.decode()
