"""Label scopes on what a scoped person counts, searches and writes: the fleet's counts and searches, compare,
firing alerts and alert events over their devices only; devices, labels, bulk imports and provisioning profiles only
into their scope; rules of theirs cover only their devices."""

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from alerts.models import AlertRule
from devices.models import Device
from tests.api.conftest import error, token_client
from tests.test_access_table import World, world_built

pytestmark = pytest.mark.usefixtures("postgres")


def logged_in(world: World, name: str) -> Client:
    client = Client()
    client.force_login(world.users[name])
    return client


def test_counts_searches_and_selections_cover_the_scope_only(transactional_db):
    world = world_built()
    for site in ("north", "south", "south"):
        world.device(site, new=True)
        world.firing(site)
    north, admin = logged_in(world, "north"), logged_in(world, "admin")
    mine, everyone = north.get("/fleet.json").json(), admin.get("/fleet.json").json()
    assert (mine["total"], everyone["total"]) == (2, 5)
    assert mine["counts"]["alerting"] == 1 and everyone["counts"]["alerting"] == 2  # devices alerting
    assert north.get("/fleet.json", {"q": "south"}).json()["matched"] == 0
    assert admin.get("/fleet.json", {"q": "south"}).json()["matched"] == 3
    assert {d["key"] for d in north.get("/fleet.json", {"label": "site=south"}).json()["devices"]} == set()
    compared = north.get("/compare/", {"devices": "*"}).content.decode()
    assert "north-1" in compared and "south-" not in compared
    assert "south-" in admin.get("/compare/", {"devices": "*"}).content.decode()
    alerts = north.get("/alerts/").content.decode()
    assert "north-rule" in alerts and "south-" not in alerts


async def test_writes_land_only_inside_the_scope(runtime):
    """A scoped operator creates, relabels, imports and provisions only devices their scope covers (400
    out_of_scope otherwise, nothing stored); their rules take their scope."""
    from api.credentials import api_token_create

    world = await sync_to_async(world_built)()
    token = await sync_to_async(api_token_create)(user=world.users["north"], name="north", scope="write")
    south = {"site": "south"}
    async with token_client(runtime, token) as north:
        refusals = [
            await north.post("/api/v1/devices", json={"key": "x-1", "labels": south}),
            await north.post("/api/v1/devices", json={"key": "x-2"}),  # no labels: outside any site
            await north.patch("/api/v1/devices/north-1", json={"labels": south}),
            await north.post(
                "/api/v1/devices/bulk",
                json={"devices": [{"key": "x-3", "labels": {"site": "north"}}, {"key": "x-4", "labels": south}]},
            ),  # fmt: skip
            await north.post("/api/v1/provisioning-profiles", json={"key": "p", "key_pattern": "*", "labels": south}),
        ]
        problems = [error(answer, 400) for answer in refusals]
        assert [p["code"] for p in problems[:3]] == ["out_of_scope"] * 3, problems
        assert problems[3]["rows"][0]["row"] == 2, "the bulk import names the row outside"
        assert problems[4]["field"] == "labels"
        keys = await sync_to_async(lambda: set(Device.objects.values_list("key", flat=True)))()
        assert keys == {"north-1", "south-1"}, "nothing stored, not even the bulk import's first row"
        assert (await Device.objects.aget(key="north-1")).labels == {"site": "north"}

        rule = await north.post("/api/v1/alert-rules", json={"name": "any", "key": "t", "condition": "gt",
                                                             "threshold": 1})  # fmt: skip
        assert rule.status_code == 201, rule.text
        assert (await AlertRule.objects.aget(id=rule.json()["id"])).scope == ["site=north"]
