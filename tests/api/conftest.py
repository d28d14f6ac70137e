"""Clients of the operator API, for the tests of tests/api/: an operator with a read-write or a read-only API token, a
logged-in session (with its CSRF token to send or not), and nobody. The hub runs in-process (its ASGI app over the
test's runtime, through httpx's ASGITransport): the API's behaviour needs no TCP."""

from collections.abc import AsyncIterator

import httpx
import pytest
from asgiref.sync import sync_to_async

from api.credentials import api_token_create
from hub.runtime import HubRuntime
from tests.inprocess import ORIGIN, in_process, in_process_client


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


def error(response: httpx.Response, status: int) -> dict:
    """The `error` object of a refusal, after checking its status."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()["error"]
    assert body["code"] and body["message"], body
    return body
