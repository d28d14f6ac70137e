"""Every route × every role × in and out of a label scope, from one table checked against the URL configuration and
the OpenAPI schema: a route (or an API operation) that nobody gave a policy fails here.

Each row names what the route needs (the policy's Action, or nothing: public, or a device's token), the status it
answers when allowed, and how to build its target (fresh objects for what a call destroys). Who asks: nobody
logged in, a person with no role, a viewer, an operator, an admin, an operator's read-only and read-write API
tokens, and `north`, an operator scoped to `site=north`. `north` also asks for the `site=south` twin of every
object a route names, which must be as unknown as one that does not exist (404), and no answer to `north` may
mention a `site=south` thing at all."""

import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.policy import Role
from alerts.engine import Transition, record
from alerts.evaluation import FIRED
from alerts.models import AlertRule, AlertState
from alerts.rules import rule_spec
from api.credentials import api_token_create, api_token_issue
from core.epoch import now_ms
from devices.provisioning import provisioning_profile_create as profile_create
from devices.services import DeviceIdentity, device_create
from storage.models import LatestValue
from tests.conftest import person, session_cookie
from tests.inprocess import ORIGIN, in_process

pytestmark = pytest.mark.usefixtures("postgres")

PUBLIC, DEVICE = "public", "device"  # no person needed; a device's own token in the path
VIEW, OPERATE, ADMINISTER = Role.VIEWER, Role.OPERATOR, Role.ADMIN  # the least role an Action needs
fresh = itertools.count(100)  # names beside the world's north-1 and south-1


@dataclass
class World:
    """What the routes name: each thing in `site=north` and its `site=south` twin."""

    users: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, Any] = field(default_factory=dict)  # site → (device, token)
    profiles: dict[str, tuple[str, str]] = field(default_factory=dict)  # site → (key, secret)

    def device(self, site: str, *, new: bool = False):
        if not new:
            return self.devices[site][0]
        device, _ = device_create(key=f"{site}-{next(fresh)}", labels={"site": site})
        return device

    def rule(self, site: str) -> AlertRule:
        device = self.devices[site][0]
        name, scope = f"{site}-rule-{next(fresh)}", [f"site={site}"]
        return AlertRule.objects.create(name=name, device=device, key="t", condition="gt", threshold=30, scope=scope)

    def firing(self, site: str) -> AlertState:
        rule, device = self.rule(site), self.devices[site][0]
        record([Transition(rule_spec(rule), DeviceIdentity(device.id, device.key), FIRED, now_ms(), 41.5)])
        return AlertState.objects.get(rule=rule)

    def profile(self, site: str) -> str:
        key = f"{site}-profile-{next(fresh)}"
        profile_create(key=key, key_pattern="*", labels={"site": site})
        return key


def world_built() -> World:
    world = World()
    for name, role, scope in (("nobody", 0, ()), ("viewer", 1, ()), ("operator", 2, ()), ("admin", 3, ()),
                              ("north", 2, ("site=north",))):  # fmt: skip
        world.users[name] = person(name, role=role, scope=scope)
    for site in ("north", "south"):
        device, token = device_create(key=f"{site}-1", labels={"site": site})
        LatestValue.objects.create(device_id=device.id, key="t", ts=timezone.now(), value=20.0)
        world.devices[site] = (device, token)
        profile, secret = profile_create(key=f"{site}-profile", key_pattern="*", labels={"site": site})
        world.profiles[site] = (profile.key, secret)
    return world


Target = Callable[[World, str, str], dict[str, Any]]  # (world, who asks, site) → the URL's arguments
Body = Callable[[World, str], Any]  # (world, site) → the JSON (API) or form (page) body


def same_device(world: World, who: str, site: str) -> dict[str, Any]:
    return {"key": world.device(site).key}


def new_device(world: World, who: str, site: str) -> dict[str, Any]:
    return {"key": world.device(site, new=True).key}


def new_rule(world: World, who: str, site: str) -> dict[str, Any]:
    return {"rule_id": world.rule(site).id}


def new_alert(world: World, who: str, site: str) -> dict[str, Any]:
    return {"state_id": world.firing(site).id}


def own_token(world: World, who: str, site: str) -> dict[str, Any]:
    """A token of the asker's own person (of the operator, for the token clients and strangers)."""
    owner = world.users.get(who, world.users["operator"])
    return {"token_id": api_token_issue(user=owner, name=f"t{next(fresh)}")[0].id}


def new_user(world: World, who: str, site: str) -> dict[str, Any]:
    return {"user_id": person(f"someone-{next(fresh)}", role=1).id}


def device_token(world: World, who: str, site: str) -> dict[str, Any]:
    return {"token": world.devices["north"][1]}


def profile_of(world: World, who: str, site: str) -> dict[str, Any]:
    return {"key": world.profiles[site][0]}


def new_profile(world: World, who: str, site: str) -> dict[str, Any]:
    return {"key": world.profile(site)}


def new_command(world: World, who: str, site: str) -> dict[str, Any]:
    """A two-way command delivered to the site's device, waiting for its answer."""
    from control.commands import CommandAsk, command_create, commands_handed

    device = world.device(site)
    command = command_create(device_id=device.id, ask=CommandAsk("m", persistent=True), by="t")
    commands_handed([command.id], delivered=True)
    return {"key": device.key, "command_id": command.id, "token": world.devices["north"][1]}


def quiet_device(world: World, who: str, site: str) -> dict[str, Any]:
    """The token of a new device, which nothing has been sent to."""
    return {"token": device_create(key=f"quiet-{next(fresh)}", labels={"site": site})[1]}


def shared(world: World, who: str, site: str) -> dict[str, Any]:
    return {"key": world.device(site).key, "scope": "shared"}


def nothing(world: World, who: str, site: str) -> dict[str, Any]:
    return {}


def labelled(world: World, site: str) -> dict[str, Any]:
    return {"key": f"{site}-{next(fresh)}", "labels": {"site": site}}


def provision(world: World, site: str) -> dict[str, Any]:
    profile, secret = world.profiles[site]
    return {"profile": profile, "secret": secret, "device": f"{site}-p{next(fresh)}"}


RULE_FORM = {"name": "hot", "enabled": "on", "key": "t", "kind": "threshold", "condition": "gt", "threshold": "30",
             "duration_seconds": 0, "hysteresis": 0, "no_data_seconds": 0, "severity": "info"}  # fmt: skip


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # as the URL configuration spells it
    need: Any  # PUBLIC, DEVICE or the least Role
    ok: int
    target: Target = nothing
    body: Body | None = None
    scoped: bool = False  # names a thing that has a site: out of scope is 404
    page: bool = False  # a page: strangers go to the login page (302); the API answers them 401
    refused: int = 403  # a role below `need`
    lists: bool = False  # an answer that names every device the asker sees
    query: str = ""


ROUTES = [
    # pages
    Route("GET", "", VIEW, 200, page=True, lists=True),
    Route("GET", "fleet.json", VIEW, 200, page=True, lists=True),
    Route("GET", "devices/<slug:key>/", VIEW, 200, same_device, scoped=True, page=True),
    Route("GET", "devices/<slug:key>/history/", VIEW, 200, same_device, scoped=True, page=True),
    Route("GET", "compare/", VIEW, 200, page=True),
    Route("GET", "alerts/", VIEW, 200, page=True),
    Route("POST", "alerts/<int:state_id>/ack", OPERATE, 302, new_alert, scoped=True, page=True),
    Route("GET", "alerts/rules/", VIEW, 200, page=True),
    Route("POST", "alerts/rules/", OPERATE, 302, body=lambda w, s: {**RULE_FORM, "name": f"r{next(fresh)}"}, page=True),
    Route("GET", "alerts/rules/<int:rule_id>/", OPERATE, 200, new_rule, scoped=True, page=True),
    Route(
        "POST",
        "alerts/rules/<int:rule_id>/",
        OPERATE,
        302,
        new_rule,
        lambda w, s: {**RULE_FORM, "name": f"r{next(fresh)}", "device": w.device(s).id},
        scoped=True,
        page=True,
    ),
    Route(
        "POST",
        "alerts/rules/<int:rule_id>/enabled",
        OPERATE,
        302,
        new_rule,
        lambda w, s: {"enabled": "false"},
        scoped=True,
        page=True,
    ),
    Route("POST", "alerts/rules/<int:rule_id>/delete", OPERATE, 302, new_rule, scoped=True, page=True),
    Route("GET", "admin/", OPERATE, 200, page=True, refused=302),  # the admin site sends the rest to its login
    Route("GET", "login/", PUBLIC, 200),
    Route("GET", "healthz", PUBLIC, 200),
    Route("GET", "readyz", PUBLIC, 200),
    Route("GET", "metrics", PUBLIC, 200),
    Route("GET", "favicon.ico", PUBLIC, 301),
    # devices' own API (their token in the path; a person's credentials change nothing)
    Route("POST", "api/v1/<str:token>/telemetry", DEVICE, 200, device_token, body=lambda w, s: {"t": 21.5}),
    Route("GET", "api/v1/<str:token>/attributes", DEVICE, 200, device_token),
    Route("POST", "api/v1/<str:token>/attributes", DEVICE, 200, device_token, body=lambda w, s: {"fw": "1"}),
    Route("GET", "api/v1/<str:token>/attributes/updates", DEVICE, 408, device_token, query="timeout=50"),
    Route("GET", "api/v1/<str:token>/rpc", DEVICE, 408, quiet_device, query="timeout=50"),
    Route("POST", "api/v1/<str:token>/rpc", DEVICE, 200, device_token, body=lambda w, s: {"method": "getCurrentTime"}),
    Route("POST", "api/v1/<str:token>/rpc/<int:command_id>", DEVICE, 200, new_command, body=lambda w, s: {"ok": 1}),
    Route("POST", "api/v1/provision", PUBLIC, 201, body=provision),
    # the operator API
    Route("GET", "api/v1/devices", VIEW, 200, lists=True),
    Route("POST", "api/v1/devices", OPERATE, 201, body=labelled),
    Route("POST", "api/v1/devices/bulk", OPERATE, 201, body=lambda w, s: {"devices": [labelled(w, s)]}),
    Route("GET", "api/v1/devices/<slug:key>", VIEW, 200, same_device, scoped=True),
    Route("PATCH", "api/v1/devices/<slug:key>", OPERATE, 200, same_device, lambda w, s: {"name": "x"}, scoped=True),
    Route("DELETE", "api/v1/devices/<slug:key>", OPERATE, 204, new_device, scoped=True),
    Route("POST", "api/v1/devices/<slug:key>/token", OPERATE, 200, new_device, scoped=True),
    Route("GET", "api/v1/devices/<slug:key>/alert-events", VIEW, 200, same_device, scoped=True),
    Route("GET", "api/v1/devices/<slug:key>/telemetry", VIEW, 200, same_device, scoped=True),
    Route("GET", "api/v1/devices/<slug:key>/telemetry.csv", VIEW, 200, same_device, scoped=True),
    Route("GET", "api/v1/devices/<slug:key>/latest", VIEW, 200, same_device, scoped=True),
    Route("GET", "api/v1/devices/<slug:key>/window", VIEW, 200, same_device, scoped=True, query="start=0&end=60000"),
    Route("GET", "api/v1/devices/<slug:key>/attributes", VIEW, 200, same_device, scoped=True),
    Route(
        "POST",
        "api/v1/devices/<slug:key>/attributes/<slug:scope>",
        OPERATE,
        200,
        shared,
        lambda w, s: {"interval": 5},
        scoped=True,
    ),  # fmt: skip
    Route(
        "DELETE",
        "api/v1/devices/<slug:key>/attributes/<slug:scope>",
        OPERATE,
        200,
        shared,
        scoped=True,
        query="keys=interval",
    ),  # fmt: skip
    Route("GET", "api/v1/devices/<slug:key>/rpc", VIEW, 200, same_device, scoped=True),
    Route(
        "POST",
        "api/v1/devices/<slug:key>/rpc",
        OPERATE,
        202,
        same_device,
        lambda w, s: {"method": "m", "persistent": True},
        scoped=True,
    ),  # fmt: skip
    Route("GET", "api/v1/devices/<slug:key>/rpc/<int:command_id>", VIEW, 200, new_command, scoped=True),
    Route("GET", "api/v1/alert-rules", VIEW, 200),
    Route(
        "POST",
        "api/v1/alert-rules",
        OPERATE,
        201,
        body=lambda w, s: {
            "name": f"r{next(fresh)}",
            "device": f"{s}-1",
            "key": "t",
            "condition": "gt",
            "threshold": 30,
        },
    ),  # fmt: skip
    Route("GET", "api/v1/alert-rules/<int:rule_id>", VIEW, 200, new_rule, scoped=True),
    Route(
        "PATCH", "api/v1/alert-rules/<int:rule_id>", OPERATE, 200, new_rule, lambda w, s: {"threshold": 31}, scoped=True
    ),  # fmt: skip
    Route("DELETE", "api/v1/alert-rules/<int:rule_id>", OPERATE, 204, new_rule, scoped=True),
    Route("GET", "api/v1/alerts", VIEW, 200),
    Route("POST", "api/v1/alerts/<int:state_id>/acknowledge", OPERATE, 200, new_alert, scoped=True),
    Route("GET", "api/v1/tokens", VIEW, 200),
    Route("POST", "api/v1/tokens", VIEW, 201, body=lambda w, s: {"name": f"t{next(fresh)}"}),
    Route("DELETE", "api/v1/tokens/<int:token_id>", VIEW, 204, own_token),
    Route("GET", "api/v1/users", ADMINISTER, 200),
    Route("POST", "api/v1/users", ADMINISTER, 201, body=lambda w, s: {"username": f"u{next(fresh)}", "role": "viewer"}),
    Route("GET", "api/v1/users/<int:user_id>", ADMINISTER, 200, new_user),
    Route("PATCH", "api/v1/users/<int:user_id>", ADMINISTER, 200, new_user, lambda w, s: {"email": "a@example.com"}),
    Route("DELETE", "api/v1/users/<int:user_id>", ADMINISTER, 204, new_user),
    Route("GET", "api/v1/provisioning-profiles", VIEW, 200),
    Route(
        "POST",
        "api/v1/provisioning-profiles",
        OPERATE,
        201,
        body=lambda w, s: {"key": f"p{next(fresh)}", "key_pattern": "*", "labels": {"site": s}},
    ),  # fmt: skip
    Route("GET", "api/v1/provisioning-profiles/<slug:key>", VIEW, 200, profile_of, scoped=True),
    Route("DELETE", "api/v1/provisioning-profiles/<slug:key>", OPERATE, 204, new_profile, scoped=True),
    Route("GET", "api/v1/audit", ADMINISTER, 200),
    Route("GET", "api/v1/schema", PUBLIC, 200),  # what the API is, never what it holds
    Route("GET", "api/v1/docs", PUBLIC, 200),
    Route("POST", "logout/", PUBLIC, 302),  # last: it ends each asker's session
]
NOT_IN_SCHEMA = {"api/v1/schema", "api/v1/docs"}  # and the devices' own API (DEVICE): docs/commands.md


@dataclass(frozen=True)
class Asker:
    name: str
    role: Role | None  # None: nobody logged in (a token is no session: pages see a stranger)
    token: str = ""  # "read" or "write": an API token of the operator
    site: str = "north"  # where what it names lives


ASKERS = [
    Asker("anonymous", None),
    Asker("nobody", Role.NONE),
    Asker("viewer", Role.VIEWER),
    Asker("operator", Role.OPERATOR),
    Asker("admin", Role.ADMIN),
    Asker("north", Role.OPERATOR),
    Asker("read-token", Role.VIEWER, token="read"),
    Asker("write-token", Role.OPERATOR, token="write"),
]


def expected(route: Route, asker: Asker) -> int:
    if route.need in (PUBLIC, DEVICE):
        return route.ok
    if asker.role is None or (asker.token and route.page):
        return 302 if route.page else 401
    if asker.role < route.need or (asker.token == "read" and route.method != "GET"):
        return route.refused
    if asker.site != "north" and route.scoped:
        return 404
    return route.ok


def url_of(pattern: str, arguments: dict[str, Any]) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(arguments[m.group(1)]), pattern)


def patterns(resolver: URLResolver | None = None, prefix: str = "") -> set[str]:
    """Every route of the URL configuration (the admin site as one)."""
    found: set[str] = set()
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLPattern) or route == "admin/":
            found.add(route)
        else:
            found |= patterns(entry, route)
    return found


def test_every_route_has_a_row():
    rows = {route.pattern for route in ROUTES}
    assert patterns() == rows, f"without a row: {patterns() - rows}; rows without a route: {rows - patterns()}"
    assert len({(r.method, r.pattern) for r in ROUTES}) == len(ROUTES)


@contextlib.asynccontextmanager
async def client_of(runtime, world: World, asker: Asker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=in_process(runtime))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, timeout=60) as client:
        if asker.token:
            user = world.users["operator"]
            token = await sync_to_async(api_token_create)(user=user, name=asker.name, scope=asker.token)
            client.headers["Authorization"] = f"Bearer {token}"
        elif asker.role is not None:
            name, _, value = (await sync_to_async(session_cookie)(asker.name)).partition("=")
            client.cookies.set(name, value)
        await client.get("/login/")  # the CSRF cookie, as a page would have set it
        client.headers["X-CSRFToken"] = client.cookies[settings.CSRF_COOKIE_NAME]
        yield client


async def asked(client: httpx.AsyncClient, world: World, route: Route, asker: Asker) -> httpx.Response:
    who = "operator" if asker.token else asker.name
    arguments = await sync_to_async(route.target)(world, who, asker.site)
    body = await sync_to_async(route.body)(world, asker.site) if route.body else None
    kind = "data" if route.page else "json"
    extra = {kind: body} if body is not None else {}
    url = url_of(route.pattern, arguments) + (f"?{route.query}" if route.query else "")
    return await client.request(route.method, url, **extra)


GHOSTS = {"key": "ghost-1", "rule_id": 2**31 - 1, "state_id": 2**31 - 1, "command_id": 2**31 - 1, "scope": "shared"}


async def unknown(client: httpx.AsyncClient, route: Route) -> httpx.Response:
    """The route asked for something that does not exist."""
    url = url_of(route.pattern, GHOSTS) + (f"?{route.query}" if route.query else "")
    return await client.request(route.method, url)


async def test_every_route_answers_every_role_in_and_out_of_scope(runtime):
    world = await sync_to_async(world_built)()
    schema = await schema_operations(runtime, world)
    api_rows = {(r.method, openapi_path(r.pattern)) for r in ROUTES if r.pattern.startswith("api/v1/")}
    api_rows -= {(r.method, openapi_path(r.pattern)) for r in ROUTES if r.pattern in NOT_IN_SCHEMA or r.need == DEVICE}
    assert schema == api_rows, f"in the schema only: {schema - api_rows}; in the table only: {api_rows - schema}"

    wrong: list[str] = []
    askers = [*ASKERS, Asker("north", Role.OPERATOR, site="south")]
    for asker in askers:
        async with client_of(runtime, world, asker) as client:
            for route in ROUTES:
                if asker.site == "south" and not route.scoped:
                    continue
                response = await asked(client, world, route, asker)
                want = expected(route, asker)
                if response.status_code != want:
                    wrong.append(f"{asker.name}@{asker.site} {route.method} {route.pattern}: "
                                 f"{response.status_code} ≠ {want} {response.text[:120]!r}")  # fmt: skip
                    continue
                if asker.site == "south":  # as unknown as what does not exist
                    ghost = await unknown(client, route)
                    if ghost.status_code != 404 or (not route.page and ghost.json() != response.json()
                                                    | {"error": ghost.json()["error"]}):  # fmt: skip
                        wrong.append(f"north {route.method} {route.pattern}: {response.text} vs {ghost.text}")
                    codes = [r.json()["error"]["code"] for r in (response, ghost) if not route.page]
                    if len(set(codes)) > 1:
                        wrong.append(f"north {route.method} {route.pattern}: codes {codes}")
                    continue
                wrong += contents_wrong(route, asker, response)
    assert not wrong, "\n".join(wrong)


def contents_wrong(route: Route, asker: Asker, response: httpx.Response) -> list[str]:
    """`north` never hears of a south thing; a list names what the asker sees."""
    text, found = response.text, []
    if asker.name == "north" and "south-" in text:
        found.append(f"north {route.method} {route.pattern} names a south thing: {text[:200]!r}")
    if route.lists and response.is_success:
        sees = {"north-1", "south-1"} if asker.name != "north" else {"north-1"}
        if not all(key in text for key in sees):
            found.append(f"{asker.name} {route.method} {route.pattern} lacks one of {sees}")
    return found


def openapi_path(pattern: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", pattern)


async def schema_operations(runtime, world: World) -> set[tuple[str, str]]:
    async with client_of(runtime, world, Asker("admin", Role.ADMIN)) as client:
        schema = (await client.get("/api/v1/schema")).json()
    methods = {"get", "post", "put", "patch", "delete"}
    return {(m.upper(), path) for path, item in schema["paths"].items() for m in item if m in methods}


async def test_a_demoted_persons_tokens_are_demoted_at_once(runtime):
    """An API token acts with the lesser of its scope and its person's role, asked on every use."""
    from accounts.users import user_role_set

    world = await sync_to_async(world_built)()
    operator = world.users["operator"]
    token = await sync_to_async(api_token_create)(user=operator, name="script", scope="write")
    transport = httpx.ASGITransport(app=in_process(runtime))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers=headers) as script:
        rotate = "/api/v1/devices/north-1/token"
        assert (await script.post(rotate)).status_code == 200
        await sync_to_async(user_role_set)(operator, Role.VIEWER)
        refused = await script.post(rotate)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden", refused.text
        assert (await script.get("/api/v1/devices/north-1")).status_code == 200, "still a viewer"
        await sync_to_async(user_role_set)(operator, Role.NONE)
        assert (await script.get("/api/v1/devices/north-1")).status_code == 403


STREAMS = {  # the WebSocket routes (hub/routing.py) → who may open them, as (asker, what it names) → close code
    "ws/v1/fleet/stream": None,
    "ws/v1/devices/<slug:key>/stream": "key",
    "ws/v1/<str:token>/telemetry": "token",  # a device's: tested with its token in tests/test_ingest_e2e.py
}


def test_every_stream_route_has_a_row():
    from hub.roles import Role as ProcessRole
    from hub.routing import websocket_routes

    routes = {str(route.pattern) for route in websocket_routes(ProcessRole.ALL)} - {""}
    assert routes == set(STREAMS)


async def test_every_stream_answers_every_role_in_and_out_of_scope(runtime):
    """Strangers 4401, people without a role 4403, a device out of scope 4404 exactly as one that does not exist;
    everyone else subscribed."""
    from clients.viewer import StreamClosed
    from tests.inprocess import viewer_in_process

    await sync_to_async(world_built)()
    wrong = []
    for asker in [a for a in ASKERS if not a.token]:
        cookie = "" if asker.role is None else await sync_to_async(session_cookie)(asker.name)
        for key in (None, "north-1", "south-1", "ghost-1"):
            if asker.role is None:
                want = 4401
            elif asker.role == Role.NONE:
                want = 4403
            elif key == "ghost-1" or (key == "south-1" and asker.name == "north"):
                want = 4404
            else:
                want = 0
            try:
                async with viewer_in_process(runtime, cookie=cookie, key=key) as viewer:
                    got = 0 if viewer.opening.subscribed else -1
            except StreamClosed as closed:
                got = closed.code
            if got != want:
                wrong.append(f"{asker.name} stream of {key or 'the fleet'}: {got} ≠ {want}")
    assert not wrong, "\n".join(wrong)
