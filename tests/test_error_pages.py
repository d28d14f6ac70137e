"""A wrong address or method gets the site's own page, with its navigation and what went wrong (the API: its JSON
error); CSV exports are named by device and UTC range."""

import re

import pytest
from django.test import Client

from devices.services import device_create
from tests.conftest import person

pytestmark = pytest.mark.usefixtures("postgres")


@pytest.fixture
def viewer(transactional_db) -> Client:
    client = Client()
    client.force_login(person("watcher", role=1))
    return client


def test_a_wrong_address_gets_the_sites_page_with_a_way_back(viewer):
    for client in (viewer, Client()):
        page = client.get("/no/such/page/")
        assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
        text = page.content.decode()
        assert "Not found" in text and "/no/such/page/" in text and 'href="/"' in text, text[:500]
    missing = viewer.get("/devices/ghost-1/")
    assert missing.status_code == 404 and "ghost-1" in missing.content.decode()
    api = viewer.get("/api/v1/no-such-thing/really")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_a_get_to_a_forms_address_gets_a_page_naming_the_method(viewer):
    page = viewer.get("/alerts/1/ack")
    assert page.status_code == 405 and page["Allow"] == "POST"
    assert "takes POST" in page.content.decode() and 'href="/"' in page.content.decode()


async def test_a_csv_export_is_named_by_its_device_and_utc_range(runtime):
    from asgiref.sync import sync_to_async

    from tests.conftest import session_cookie
    from tests.inprocess import in_process_client

    await sync_to_async(device_create)(key="boiler-1")
    await sync_to_async(person)("watcher", role=1)
    cookie = await sync_to_async(session_cookie)("watcher")
    async with in_process_client(runtime, cookie=cookie) as client:
        answer = await client.get("/api/v1/devices/boiler-1/telemetry.csv?start=1765101600000&end=1765105200000")
    assert answer.status_code == 200, answer.text
    name = re.search(r'filename="([^"]+)"', answer.headers["Content-Disposition"]).group(1)
    assert name == "boiler-1_2025-12-07T10-00Z_2025-12-07T11-00Z.csv"


async def test_the_405_page_of_a_logged_in_person_served_as_the_hub_serves_it(runtime):
    """Through the ASGI app (async middleware), with a session: the page's navigation reads the user."""
    from asgiref.sync import sync_to_async

    from tests.conftest import session_cookie
    from tests.inprocess import in_process_client

    await sync_to_async(person)("watcher", role=2)
    cookie = await sync_to_async(session_cookie)("watcher")
    async with in_process_client(runtime, cookie=cookie) as client:
        page = await client.get("/alerts/1/ack")
    assert page.status_code == 405 and "takes POST" in page.text and "watcher" in page.text, page.text[:300]
