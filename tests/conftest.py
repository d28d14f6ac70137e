"""Shared fixtures: real services, a served hub, devices with tokens, logged-in operators."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, connections

from core.collector import collector_for_serving
from devices.services import device_create
from hub.asgi import HubApplication
from hub.config import HubConfig
from hub.roles import Role
from hub.runtime import HubRuntime, hub_runtime
from hub.server import server_started, uvicorn_options
from testkit.process import ROOT, HubProcess, free_port
from tests.inprocess import in_process_client
from tests.services import MQTT_URL, POSTGRES_URL, REDIS_URL, need

# tests.engines: the `engine` fixture (storage tests on PostgreSQL and TimescaleDB); tests.browser_pages: `page`,
# `operator` (browser tests)
pytest_plugins = ["tests.engines", "tests.browser_pages"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `serial` measure time or CPU: under pytest-xdist (`make test` runs two workers) one worker takes
    them all, so no two of them share the machine's cores (`--dist loadgroup`)."""
    for item in items:
        if item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.xdist_group("serial"))


@pytest.fixture
def postgres() -> str:
    """The suite's database is PostgreSQL (skip or fail otherwise)."""
    need("PostgreSQL", POSTGRES_URL)
    assert connection.vendor == "postgresql", f"tests run on {connection.vendor}; set HUB_DATABASE_URL"
    return POSTGRES_URL


@pytest.fixture
def redis() -> str:
    """The channel layer is channels-redis (skip or fail otherwise)."""
    need("Redis", REDIS_URL)
    assert settings.REDIS_URLS, "HUB_REDIS_URL is not set for the tests"
    return REDIS_URL


@pytest.fixture
def mqtt() -> str:
    need("MQTT broker", MQTT_URL)
    return MQTT_URL


@pytest.fixture(autouse=True)
async def _orm_connections_closed() -> AsyncIterator[None]:
    """Close the ORM connections of asgiref's sync thread, which would otherwise keep the test database in
    use when pytest-django drops it."""
    yield
    await sync_to_async(connections.close_all)()


def hub_settings_applied(request: pytest.FixtureRequest) -> None:
    """`@pytest.mark.hub_settings(HUB_X=...)`: settings a test's hub starts with (a runtime reads its
    configuration once, when it starts)."""
    marker = request.node.get_closest_marker("hub_settings")
    if marker is not None:
        settings_fixture = request.getfixturevalue("settings")
        for name, value in marker.kwargs.items():
            setattr(settings_fixture, name, value)


@pytest.fixture
async def runtime(transactional_db, request) -> AsyncIterator[HubRuntime]:
    """The hub runtime of this test's process (as the ASGI lifespan builds it), for tests that drive consumers
    or the writer without a served hub; stopped (writer drained) at the end."""
    hub_settings_applied(request)
    async with hub_runtime() as running:
        yield running


@dataclass(frozen=True)
class DeviceToken:
    key: str
    id: int
    token: str


@pytest.fixture
def make_device(transactional_db) -> Callable[..., DeviceToken]:
    counter = iter(range(1, 1_000_000))

    def make(key: str | None = None) -> DeviceToken:
        device, token = device_create(key=key or f"dev-{next(counter)}")
        return DeviceToken(device.key, device.id, token)

    return make


@dataclass(frozen=True)
class LiveHub:
    http: str
    ws: str
    runtime: HubRuntime  # the served process's parts, handed to every connection as the lifespan would
    app: HubApplication


@contextlib.asynccontextmanager
async def served_hub(*, role: Role = Role.ALL, **overrides) -> AsyncIterator[LiveHub]:
    """The real ASGI app under an in-process uvicorn on a free loopback port, serving a runtime of this test's
    settings (handed in, as `demo` does, so the test can reach its parts)."""
    port = free_port()
    options = {**uvicorn_options(), **overrides}
    async with hub_runtime(HubConfig.from_settings(role=role)) as runtime:
        app = HubApplication(role, runtime=runtime)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
        with collector_for_serving():
            serving = asyncio.create_task(server.serve())
            await server_started(server, serving)
            try:
                yield LiveHub(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", runtime, app)
            finally:
                server.should_exit = True
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(serving, 30)


@pytest.fixture
async def live_hub(transactional_db, request) -> AsyncIterator[LiveHub]:
    hub_settings_applied(request)
    async with served_hub() as hub:
        yield hub


def session_cookie(username: str) -> str:
    """The session cookie header value (`sessionid=...`) of a user logged in as the login page would."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def person(username: str, *, role: int = 2, password: str = "pw", scope: tuple[str, ...] = (), **extra):  # noqa: S107
    """A user of the test database with a role (accounts.policy.Role: 1 viewer, 2 operator, 3 admin; 0 none)
    and a label scope (selector texts)."""
    from accounts.policy import Role
    from accounts.users import user_role_set, user_scope_set

    user = get_user_model().objects.create_user(username, password=password, **extra)
    user_role_set(user, Role(role))
    user_scope_set(user, scope)
    return user


@pytest.fixture
def operator_cookie(transactional_db) -> str:
    """A logged-in operator's session cookie header value."""
    person("operator")
    return session_cookie("operator")


@pytest.fixture
def operator_user(transactional_db):
    """An operator (not an admin) of the test database."""
    return person("ops")


@pytest.fixture
async def browser(runtime, operator_user) -> AsyncIterator[httpx.AsyncClient]:
    """A logged-in operator's browser, of the in-process hub: session cookie and the CSRF cookie a page sets (`csrf`
    holds its value, to send as X-CSRFToken, as a page's script would)."""
    async with in_process_client(runtime) as client:
        name, _, value = (await sync_to_async(session_cookie)(operator_user.username)).partition("=")
        client.cookies.set(name, value)
        assert (await client.get("/login/")).status_code in (200, 302)  # sets the csrftoken cookie
        client.csrf = client.cookies[settings.CSRF_COOKIE_NAME]
        yield client


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Close Django's psycopg pool before the test database is dropped (it holds a connection)."""
    yield
    with django_db_blocker.unblock():
        for conn in connections.all():
            conn.close()
            if hasattr(conn, "close_pool"):
                conn.close_pool()


@pytest.fixture
def hub_process(tmp_path) -> Iterator[Callable[..., HubProcess]]:
    """Factory: a hub subprocess with a clean HUB_* environment plus `env` (not started)."""
    made: list[HubProcess] = []

    def make(*, migrate: bool = False, workers: int = 1, **env: str) -> HubProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "DJANGO_"))}
        environment.update({"HUB_VAR_DIR": str(tmp_path), "HUB_SECRET_KEY": "x" * 50, **env})
        if migrate:
            command = [sys.executable, "manage.py", "migrate", "-v0"]
            subprocess.run(command, cwd=ROOT, env=environment, check=True, timeout=120)
        hub = HubProcess(environment, workers=workers)
        made.append(hub)
        return hub

    yield make
    for hub in made:
        hub.stop(signal.SIGKILL)


def database_url_for_tests(**overrides: str | int) -> str:
    """A postgresql:// URL for Django's current (test) database, optionally via another host/port."""
    settings_dict = {**connection.settings_dict, **{k.upper(): v for k, v in overrides.items()}}
    user = settings_dict.get("USER") or "postgres"
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgresql://{user}@{host}:{port}/{settings_dict['NAME']}"
