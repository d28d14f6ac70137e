"""No input gets a 500 (issue 22, finding 3): every page's and endpoint's query parameters with NUL, huge, negative and
non-numeric values, and each body the probe found, answered with a 4xx that names the problem. In-process: the
answers need no TCP."""

import pytest
from asgiref.sync import sync_to_async

from tests.inprocess import in_process_client

pytestmark = pytest.mark.usefixtures("postgres")

ABSURD = [
    "%00",
    "a%00b",
    "-1",
    "1e30",
    "100000000000000000",
    str(2**63),
    str(-(2**63) - 1),
    "x",
    "",
    "%ff%fe",
    "9" * 400,
]


def page_and_api_queries(key: str) -> dict[str, list[str]]:
    """Every GET route an operator reaches, with the query parameters it reads."""
    return {
        "/": ["q", "label", "status", "sort", "page"],
        "/fleet.json": ["q", "label", "status", "sort", "page"],
        f"/devices/{key}/": ["key", "window"],
        f"/devices/{key}/history/": ["range", "start", "end", "keys", "agg", "interval"],
        "/compare/": ["label", "keys", "devices", "window"],
        "/alerts/": ["device"],
        "/alerts/rules/": ["rule"],
        "/api/v1/devices": ["q", "label", "status", "page", "page_size"],
        f"/api/v1/devices/{key}": [],
        f"/api/v1/devices/{key}/alert-events": ["start", "end", "limit"],
        f"/api/v1/devices/{key}/telemetry": ["keys", "start", "end", "agg", "interval", "limit", "order", "band"],
        f"/api/v1/devices/{key}/telemetry.csv": ["keys", "start", "end", "agg", "interval", "limit", "band"],
        f"/api/v1/devices/{key}/latest": [],
        f"/api/v1/devices/{key}/window": ["keys", "start", "end", "px"],
        "/api/v1/alerts": ["device", "page"],
        "/api/v1/alert-rules": ["page"],
        "/api/v1/tokens": [],
        "/api/v1/provisioning-profiles": [],
    }


async def test_absurd_query_parameters_get_4xx_never_5xx(runtime, make_device, operator_cookie):
    """Each parameter alone with each absurd value, on every route: an answer below 500; a NUL always 400."""
    device = await sync_to_async(make_device)("probe")
    answered: dict[int, int] = {}
    async with in_process_client(runtime, cookie=operator_cookie) as client:
        for path, parameters in page_and_api_queries(device.key).items():
            assert (await client.get(path)).status_code < 500, path
            for parameter in parameters:
                for value in ABSURD:
                    url = f"{path}?{parameter}={value}"
                    status = (await client.get(url)).status_code
                    assert status < 500, url
                    assert status == 400 or "%00" not in value, f"{url}: a NUL is refused ({status})"
                    answered[status] = answered.get(status, 0) + 1
    assert answered.get(400, 0) > 100 and answered.get(200, 0) > 100, answered


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/alerts?device=%00",
        "/?q=%00",
        "/fleet.json?q=%00",
        "/api/v1/devices/probe/window?start=100000000000000000&end=100000000000000001",
        f"/api/v1/devices/probe/window?start=0&end={2**63}",
        "/api/v1/devices/probe/window?start=0&end=1e30",
    ],
)
async def test_the_probes_queries_are_refused_by_name(runtime, make_device, operator_cookie, url):
    """Each of the probe's 500s: 400, naming the parameter."""
    await sync_to_async(make_device)("probe")
    async with in_process_client(runtime, cookie=operator_cookie) as client:
        answer = await client.get(url)
    assert answer.status_code == 400, answer.text
    parameter = url.split("?")[1].split("=")[0] if "%00" in url else "end" if "start=0" in url else "start"
    assert parameter in answer.text, answer.text


async def test_bodies_with_nul_huge_or_broken_fields_are_400(runtime, operator_user, browser):
    """A device or API token named with a NUL; a bulk CSV with a NUL, a field over 128 KiB; a provisioning profile
    that expires past any date or allows more devices than the column holds: 400 naming the field."""
    headers = {"X-CSRFToken": browser.csrf}
    cases = [
        ("/api/v1/devices", {"key": "nul-1", "name": "a\u0000b"}, "name"),
        ("/api/v1/tokens", {"name": "t\u0000"}, "name"),
        ("/api/v1/devices/bulk", [{"key": "nul-2", "labels": {"site": "x\u0000"}}], "labels"),
        ("/api/v1/provisioning-profiles", {"key": "far", "expires": 1_000_000_000_000_000}, "expires"),
        ("/api/v1/provisioning-profiles", {"key": "many", "max_devices": 2**31}, "max_devices"),
    ]
    for path, body, field in cases:
        answer = await browser.post(path, json=body, headers=headers)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"]["field"] == field, answer.text
    csv_headers = {**headers, "Content-Type": "text/csv"}
    for text, row in [("key,name\nok-1,fine\nnul-3,a\u0000b\n", 2), ("key,name\nbig," + "x" * 140_000 + "\n", 1)]:
        answer = await browser.post("/api/v1/devices/bulk", content=text.encode(), headers=csv_headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["rows"][0]["row"] == row, answer.text


async def test_a_bulk_csv_with_cr_line_ends_is_read(runtime, browser):
    """Old Mac line ends (CR alone) are line ends: the rows are imported, not a 500."""
    text = "key,name\rcr-1,first\rcr-2,second\r"
    headers = {"X-CSRFToken": browser.csrf, "Content-Type": "text/csv"}
    answer = await browser.post("/api/v1/devices/bulk", content=text.encode(), headers=headers)
    assert answer.status_code == 201, answer.text
    assert [d["key"] for d in answer.json()["devices"]] == ["cr-1", "cr-2"]


async def test_what_the_schema_fuzzer_found_is_400(runtime, browser):
    """tests/api/test_api_fuzz.py's finds, each kept here: an empty bulk body (text/csv, so no parser ran) was a
    500 (KeyError), is 400 naming `devices`."""
    headers = {"X-CSRFToken": browser.csrf, "Content-Type": "text/csv"}
    answer = await browser.post("/api/v1/devices/bulk", content=b"", headers=headers)
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "devices", answer.text
