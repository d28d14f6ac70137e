"""Clients of the operator API, for the tests of tests/api/: an operator with a read-write or a read-only API token, a
logged-in session (with its CSRF token to send or not), and nobody. The hub runs in-process (its ASGI app over the
test's runtime, through httpx's ASGITransport): the API's behaviour needs no TCP."""

from collections.abc import AsyncIterator

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from api.credentials import api_token_create
from hub.runtime import HubRuntime
from tests.inprocess import ORIGIN, in_process, in_process_client


@pytest.fixture
def operator_user(transactional_db):
    return get_user_model().objects.create_user("ops", password="pw")


def token_client(runtime: HubRuntime, token: str) -> httpx.AsyncClient:
    """A script's client with `token`, of the in-process hub."""
    transport = httpx.ASGITransport(app=in_process(runtime))
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers=headers, timeout=60)


@pytest.fixture
async def writer(runtime, operator_user) -> AsyncIterator[httpx.AsyncClient]:
    """A script with a read-write API token."""
    token = await sync_to_async(api_token_create)(user=operator_user, name="writer", scope="write")
    async with token_client(runtime, token) as client:
        yield client


@pytest.fixture
async def reader(runtime, operator_user) -> AsyncIterator[httpx.AsyncClient]:
    """A script with a read-only API token."""
    token = await sync_to_async(api_token_create)(user=operator_user, name="reader", scope="read")
    async with token_client(runtime, token) as client:
        yield client


@pytest.fixture
async def anonymous(runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(runtime) as client:
        yield client


@pytest.fixture
async def browser(runtime, operator_user) -> AsyncIterator[httpx.AsyncClient]:
    """A logged-in operator's browser: session cookie and the CSRF cookie a page sets (`csrf` holds its value,
    to send as X-CSRFToken, as a page's script would)."""

    def session_cookie() -> str:
        client = Client()
        client.force_login(operator_user)
        return client.cookies[settings.SESSION_COOKIE_NAME].value

    async with in_process_client(runtime) as client:
        client.cookies.set(settings.SESSION_COOKIE_NAME, await sync_to_async(session_cookie)())
        assert (await client.get("/login/")).status_code in (200, 302)  # sets the csrftoken cookie
        client.csrf = client.cookies[settings.CSRF_COOKIE_NAME]
        yield client


def error(response: httpx.Response, status: int) -> dict:
    """The `error` object of a refusal, after checking its status."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()["error"]
    assert body["code"] and body["message"], body
    return body
