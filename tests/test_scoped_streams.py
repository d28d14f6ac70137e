"""Label scopes on the live dashboard streams (issue 23): a scoped person's fleet stream carries only the digests
and alert events of their devices, a device stream outside their scope is as unknown, a device that leaves the
scope leaves their open streams within one refresh, and a person with no role is refused. An unscoped operator on
the same hub gets everything, so what a scoped stream lacks was really published."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from alerts.models import AlertRule
from clients.viewer import StreamClosed, ViewerClient
from core.epoch import now_ms
from core.protocol import Close
from devices.models import Device
from devices.services import device_create, device_update
from hub.runtime import HubRuntime
from tests.conftest import person, session_cookie
from tests.inprocess import in_process_client, viewer_in_process

pytestmark = [
    pytest.mark.usefixtures("postgres", "redis"),
    pytest.mark.hub_settings(
        HUB_FLEET_DIGEST_SECONDS=0.05, HUB_STREAM_SCOPE_REFRESH_SECONDS=0.2, HUB_ALERT_RULES_REFRESH_SECONDS=0
    ),
]

Message = dict[str, Any]


@sync_to_async
def labelled(key: str, site: str) -> str:
    """A device of `site` (its label); its token."""
    return device_create(key=key, labels={"site": site})[1]


@sync_to_async
def device_id(key: str) -> int:
    return Device.objects.get(key=key).id


@sync_to_async
def swap_sites(north: str, south: str) -> None:
    """Relabel the two devices at once (a refresh sees both changes or neither)."""
    with transaction.atomic():
        device_update(key=north, labels={"site": "south"})
        device_update(key=south, labels={"site": "north"})


@sync_to_async
def cookie_of(username: str, *, role: int, scope: tuple[str, ...] = ()) -> str:
    person(username, role=role, scope=scope)
    return session_cookie(username)


async def post(runtime: HubRuntime, token: str, values: dict[str, float], ts: int | None = None) -> None:
    """One reading committed through the HTTP ingest endpoint (answered once committed)."""
    async with in_process_client(runtime) as client:
        response = await client.post(f"/api/v1/{token}/telemetry", json=[{"ts": ts or now_ms(), "values": values}])
    assert response.status_code == 200, response.text


async def until(stream: ViewerClient, done: Callable[[list[Message]], bool], *, timeout: float = 5.0) -> list[Message]:
    """The live messages of `stream` until those received so far are `done`."""
    got: list[Message] = []
    async with asyncio.timeout(timeout):
        while not got or not done(got):
            got.append(await stream.receive())
    return got


def fleet_keys(messages: list[Message]) -> set[str]:
    return {key for m in messages if m["type"] == "fleet" for key in m["devices"]}


def alerted(messages: list[Message]) -> list[str]:
    return [m["event"]["device"] for m in messages if m["type"] == "alert"]


async def sentinel(runtime: HubRuntime, *keys: str) -> Callable[[list[Message]], bool]:
    """Publish a fleet digest of `keys` marked with a unique `seen`; returns what recognises it on a stream.
    Everything published before it reaches a stream before it (one subscriber, one outbox per stream, in order)."""
    mark = now_ms() + 123_456
    await runtime.publisher.fleet_digest({key: {"seen": mark, "n": 0, "latest": {}} for key in keys})
    return lambda got: got[-1]["type"] == "fleet" and any(d["seen"] == mark for d in got[-1]["devices"].values())


async def test_a_scoped_fleet_stream_carries_only_the_digests_of_its_devices(runtime, operator_cookie):
    """Readings of a north and a south device: the operator's fleet stream digests both, the stream of a person
    scoped to site=north only the north one, and a digest naming both reaches them narrowed to the north one."""
    north, south = await labelled("n-1", "north"), await labelled("s-1", "south")
    northern = await cookie_of("northern", role=1, scope=("site=north",))
    async with (
        viewer_in_process(runtime, cookie=operator_cookie) as everyone,
        viewer_in_process(runtime, cookie=northern) as scoped,
    ):
        ts = now_ms()
        await asyncio.gather(post(runtime, north, {"t": 1.0}, ts), post(runtime, south, {"t": 2.0}, ts))
        seen_by_all = await until(everyone, lambda got: {"n-1", "s-1"} <= fleet_keys(got))
        digests = {k: d for m in seen_by_all if m["type"] == "fleet" for k, d in m["devices"].items()}
        assert digests["s-1"]["latest"] == {"t": [ts, "t", 2.0]}, "the south reading was published"
        both = await sentinel(runtime, "n-1", "s-1")
        seen_scoped = await until(scoped, both)
    assert fleet_keys(seen_scoped) == {"n-1"}
    north_digest = next(m["devices"]["n-1"] for m in seen_scoped if m["type"] == "fleet")
    assert north_digest["latest"] == {"t": [ts, "t", 1.0]}
    assert list(seen_scoped[-1]["devices"]) == ["n-1"], "a digest of both devices, narrowed"


async def test_a_device_stream_outside_the_scope_is_closed_as_an_unknown_device(runtime, operator_cookie):
    """For a person scoped to site=north, a south device's stream closes with 4404 exactly as a key that exists
    nowhere does; a north device's stream opens and catches up; the operator opens the south one."""
    north, _south = await labelled("n-1", "north"), await labelled("s-1", "south")
    northern = await cookie_of("northern", role=1, scope=("site=north",))
    for key in ("s-1", "ghost"):
        with pytest.raises(StreamClosed) as closed:
            async with viewer_in_process(runtime, cookie=northern, key=key):
                pass
        assert closed.value.code == Close.UNKNOWN_DEVICE, key
    ts = now_ms() - 1_000
    await post(runtime, north, {"t": 5.0}, ts)
    async with viewer_in_process(runtime, cookie=northern, key="n-1") as stream:
        assert await stream.catch_up(ts - 1) == [[ts, "t", 5.0]]
    async with viewer_in_process(runtime, cookie=operator_cookie, key="s-1") as stream:
        assert await stream.catch_up(ts - 1) == []


async def test_a_device_that_leaves_the_scope_leaves_the_open_streams(runtime, operator_cookie):
    """n-1 is relabelled south while a north-scoped person follows it: their device stream closes with 4404 within
    a refresh (0.2 s here), and their fleet stream no longer carries its digests, while s-1, relabelled north at
    the same time, joins it. The operator still gets both."""
    moving, joining = await labelled("n-1", "north"), await labelled("s-1", "south")
    northern = await cookie_of("northern", role=1, scope=("site=north",))
    async with (
        viewer_in_process(runtime, cookie=operator_cookie) as everyone,
        viewer_in_process(runtime, cookie=northern) as scoped,
        viewer_in_process(runtime, cookie=northern, key="n-1") as device_stream,
    ):
        await device_stream.catch_up(now_ms())
        await swap_sites("n-1", "s-1")
        async with asyncio.timeout(2):
            assert await device_stream.closed() == Close.UNKNOWN_DEVICE
        # The fleet stream has the device stream's scope: the refresh that closed that one told it too.
        ts = now_ms()
        await asyncio.gather(post(runtime, moving, {"t": 1.0}, ts), post(runtime, joining, {"t": 2.0}, ts))
        seen_by_all = await until(everyone, lambda got: {"n-1", "s-1"} <= fleet_keys(got))
        digests = {k: d for m in seen_by_all if m["type"] == "fleet" for k, d in m["devices"].items()}
        assert digests["n-1"]["latest"] == {"t": [ts, "t", 1.0]}, "the departed device's reading was published"
        both = await sentinel(runtime, "n-1", "s-1")
        seen_scoped = await until(scoped, both)
    assert fleet_keys(seen_scoped) == {"s-1"}, "the device that left is gone, the one that came is there"


@pytest.mark.parametrize("key", [None, "n-1"], ids=["fleet", "device"])
async def test_a_person_with_no_role_is_refused_every_stream(runtime, key):
    """Logged in but given no role: 4403 on the fleet stream and on a device's stream (a viewer opens both)."""
    await labelled("n-1", "north")
    nobody, viewer = await cookie_of("nobody", role=0), await cookie_of("viewer", role=1)
    with pytest.raises(StreamClosed) as closed:
        async with viewer_in_process(runtime, cookie=nobody, key=key):
            pass
    assert closed.value.code == Close.TOKEN_REVOKED
    async with viewer_in_process(runtime, cookie=viewer, key=key) as stream:
        assert stream.opening.subscribed


async def test_an_alert_event_reaches_only_the_streams_whose_scope_covers_its_device(runtime, operator_cookie):
    """Rules fire on a north and a south device: the operator's fleet stream gets both events, a north-scoped and
    a south-scoped person's fleet streams one each, and the north device's own stream its event."""
    north, south = await labelled("n-1", "north"), await labelled("s-1", "south")
    northern = await cookie_of("northern", role=1, scope=("site=north",))
    southern = await cookie_of("southern", role=1, scope=("site=south",))
    for key in ("n-1", "s-1"):
        await sync_to_async(AlertRule.objects.create)(
            name=f"hot {key}", device_id=await device_id(key), key="t", condition="gt", threshold=30.0
        )
    async with (
        viewer_in_process(runtime, cookie=operator_cookie) as everyone,
        viewer_in_process(runtime, cookie=northern) as north_fleet,
        viewer_in_process(runtime, cookie=southern) as south_fleet,
        viewer_in_process(runtime, cookie=northern, key="n-1") as north_device,
    ):
        await north_device.catch_up(now_ms())
        await asyncio.gather(post(runtime, north, {"t": 40.0}), post(runtime, south, {"t": 41.0}))
        seen_by_all = await until(everyone, lambda got: sorted(alerted(got)) == ["n-1", "s-1"])
        assert all(m["event"]["type"] == "fired" for m in seen_by_all if m["type"] == "alert")
        both = await sentinel(runtime, "n-1", "s-1")
        assert alerted(await until(north_fleet, both)) == ["n-1"]
        assert alerted(await until(south_fleet, both)) == ["s-1"]
        received = await until(north_device, lambda got: got[-1]["type"] == "alert")
        event = next(m["event"] for m in received if m["type"] == "alert")  # readings may come before it
    assert event["device"] == "n-1" and event["value"] == 40.0


async def test_a_persons_new_scope_or_lost_role_reaches_their_open_streams(runtime):
    """An admin narrows a person's scope: their stream of a device now outside it closes 4404 within a refresh;
    then takes their role away (or deactivates them): every stream of theirs closes 4403."""
    from django.contrib.auth import get_user_model

    from accounts.policy import Role
    from accounts.users import user_role_set, user_scope_set

    await labelled("n-1", "north")
    await labelled("s-1", "south")
    cookie = await cookie_of("contractor", role=1)
    user = await get_user_model().objects.aget(username="contractor")
    async with (
        viewer_in_process(runtime, cookie=cookie) as fleet,
        viewer_in_process(runtime, cookie=cookie, key="n-1") as north,
        viewer_in_process(runtime, cookie=cookie, key="s-1") as south,
    ):
        await sync_to_async(user_scope_set)(user, ("site=north",))
        async with asyncio.timeout(2):
            assert await south.closed() == Close.UNKNOWN_DEVICE
        await sync_to_async(user_role_set)(user, Role.NONE)
        async with asyncio.timeout(2):
            assert (await north.closed(), await fleet.closed()) == (Close.TOKEN_REVOKED, Close.TOKEN_REVOKED)

    cookie = await cookie_of("leaver", role=2)
    async with viewer_in_process(runtime, cookie=cookie) as fleet:
        await get_user_model().objects.filter(username="leaver").aupdate(is_active=False)
        async with asyncio.timeout(2):
            assert await fleet.closed() == Close.TOKEN_REVOKED


def test_people_now_reads_roles_and_scopes_as_the_policy_does(transactional_db):
    """The streams' batch read (five queries) agrees with actor_of person by person."""
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.models import LabelScope
    from accounts.policy import actor_of, people_now

    people = [person("v", role=1), person("o", role=2, scope=("site=north", "site=south, floor=2")),
              person("a", role=3), person("none", role=0), person("root", role=0, is_superuser=True),
              person("gone", role=2, is_active=False), person("grouped", role=0)]  # fmt: skip
    team = Group.objects.create(name="team")
    team.permissions.set(Group.objects.get(name="operator").permissions.all())
    LabelScope.objects.create(group=team, selector="site=east")
    people[-1].groups.add(team)
    with CaptureQueriesContext(connection) as queries:
        batch = people_now([p.id for p in people] + [999_999])
    assert len(queries) == 5
    for user in people:
        actor = actor_of(user)
        assert batch.get(user.id, (0, ())) == (actor.role, actor.scope), user.username
    assert batch[people[-1].id][0] == 2 and batch[people[1].id][1], "roles and scopes were really read"
