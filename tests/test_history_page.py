"""The history page against real PostgreSQL: login, 404, keys, escaping, and a CSV link of what is shown."""

import csv
import io
import json
import re
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import reverse

from core.epoch import now_ms
from history.selectors import interval_auto
from ingest.parsing import Reading as R
from storage.models import LatestValue
from tests.browser_chromium import CHROMIUM, CHROMIUM_ARGS, need_chromium
from tests.conftest import person, session_cookie
from tests.inprocess import in_process_client
from tests.test_history import HOUR, MINUTE, hour_floor, store

pytestmark = pytest.mark.usefixtures("postgres")

DAY = 24 * HOUR


@pytest.fixture
def operator(transactional_db):
    return person("viewer", password="pw")


@pytest.fixture
def browser(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def latest(device, key: str, value: float | None = 1.0, text: str | None = None) -> None:
    LatestValue.objects.create(device_id=device.id, key=key, ts="2030-01-01T00:00:00Z", value=value, text=text)


def csv_link(html: str) -> tuple[str, dict[str, str]]:
    href = unescape(re.search(r'id="history-csv" href="([^"]*)"', html).group(1))
    parts = urlsplit(href)
    return parts.path, dict(parse_qsl(parts.query))


def page_config(html: str) -> dict:
    return json.loads(re.search(r'<script id="history-config" type="application/json">(.*?)</script>', html).group(1))


def test_history_page_needs_a_login(make_device):
    """An anonymous visitor is sent to the login page, and comes back after logging in."""
    device = make_device()
    url = reverse("dashboards:history", args=[device.key])
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(resolve_url(settings.LOGIN_URL)) and "next=" in response["Location"]


def test_unknown_device_is_404(browser):
    assert browser.get(reverse("dashboards:history", args=["ghost"])).status_code == 404


def test_page_lists_the_numeric_keys_and_escapes_the_device_name(browser, make_device):
    """Checkboxes for each numeric key (text-only keys have no history); the device name is escaped."""
    device = make_device()
    from devices.models import Device

    Device.objects.filter(id=device.id).update(name='<script>alert("x")</script>')
    for key in ("volt", "temp"):
        latest(device, key)
    latest(device, "status", value=None, text="ok")
    html = browser.get(reverse("dashboards:history", args=[device.key])).content.decode()
    boxes = re.findall(r'<input type="checkbox" name="keys" value="([^"]*)"( checked)?>', html)
    assert boxes == [("temp", " checked"), ("volt", " checked")], "every numeric key, all chosen by default"
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "plotly/plotly.min.js" in html and "cdn" not in html.lower(), "plotly.js from static files"


def test_device_page_links_to_its_history(browser, make_device):
    device = make_device()
    html = browser.get(reverse("dashboards:device", args=[device.key])).content.decode()
    assert f'href="{reverse("dashboards:history", args=[device.key])}"' in html


def test_csv_link_carries_the_chosen_parameters(browser, make_device):
    """Keys, UTC instants, aggregate and interval from the page's URL are exactly the CSV link's."""
    device = make_device()
    for key in ("temp", "volt", "rssi"):
        latest(device, key)
    url = reverse("dashboards:history", args=[device.key])
    csv_path = reverse("telemetry-csv", args=[device.key])
    start, end = 1_700_000_000_123, 1_700_000_000_123 + 6 * HOUR

    chosen = {"range": "custom", "start": start, "end": end, "keys": "volt,temp", "agg": "max", "interval": MINUTE}
    path, params = csv_link(browser.get(url, chosen).content.decode())
    assert path == csv_path
    want = {"keys": "temp,volt", "start": str(start), "end": str(end), "agg": "MAX", "interval": str(MINUTE)}
    assert params == want, "keys in the device's order; instants passed through untouched (UTC ms)"

    _, avg = csv_link(browser.get(url, {**chosen, "agg": "AVG", "interval": ""}).content.decode())
    assert avg["interval"] == str(interval_auto(start, end)) and avg["band"] == "1", "auto interval, min/max band"

    _, raw = csv_link(browser.get(url, {**chosen, "agg": "NONE"}).content.decode())
    assert raw["limit"] == "10000" and "interval" not in raw, "raw: the points a page holds"

    before = now_ms()
    html = browser.get(url, {"range": "7d", "keys": "rssi"}).content.decode()
    _, week = csv_link(html)
    assert int(week["end"]) - int(week["start"]) == 7 * DAY and before <= int(week["end"]) <= before + 60_000
    assert week["keys"] == "rssi" and week["agg"] == "AVG" and week["interval"] == str(10 * MINUTE)
    assert page_config(html)["choices"]["range"] == "7d"


def test_bad_page_parameters_fall_back_to_defaults(browser, make_device):
    device = make_device()
    latest(device, "temp")
    url = reverse("dashboards:history", args=[device.key])
    bad = {"range": "custom", "start": 5, "end": 4, "keys": "nope", "agg": "MEDIAN", "interval": 1}
    html = browser.get(url, bad).content.decode()
    _, params = csv_link(html)
    assert params["keys"] == "temp" and params["agg"] == "AVG"
    assert int(params["end"]) - int(params["start"]) == DAY and params["interval"] == str(MINUTE)
    assert page_config(html)["choices"]["range"] == "24h"


def test_the_page_works_in_utc_whatever_the_server_time_zone(browser, make_device, settings):
    """The page's URL, config and CSV link carry UTC milliseconds; only the browser shows local time."""
    settings.TIME_ZONE = "Asia/Kolkata"  # UTC+05:30: any server-side conversion would shift by 19,800,000 ms
    device = make_device()
    latest(device, "temp")
    start, end = 1_700_000_000_000, 1_700_003_600_000
    url = reverse("dashboards:history", args=[device.key])
    html = browser.get(url, {"range": "custom", "start": start, "end": end}).content.decode()
    _, params = csv_link(html)
    assert (int(params["start"]), int(params["end"])) == (start, end)
    assert (page_config(html)["choices"]["start"], page_config(html)["choices"]["end"]) == (start, end)


async def test_the_csv_link_exports_exactly_what_the_chart_draws(make_device, operator, runtime):
    """The CSV behind the page's link holds the same buckets, averages and min/max band as the JSON drawn."""
    device = await sync_to_async(make_device)()
    t0 = hour_floor(now_ms()) - 3 * HOUR
    await store(
        runtime.writer,
        device,
        [R(t0 + i * 7_000, key, float(i % 37) + len(key)) for i in range(1500) for key in ("a", "b")],
    )
    async with in_process_client(runtime, cookie=await sync_to_async(session_cookie)(operator)) as client:
        url = reverse("dashboards:history", args=[device.key])
        choices = {"range": "custom", "start": t0, "end": t0 + 3 * HOUR, "agg": "AVG"}
        html = (await client.get(url, params=choices)).text
        path, params = csv_link(html)
        config = page_config(html)
        drawn = (await client.get(config["api"], params=params)).json()  # what history.js fetches and draws
        response = await client.get(path, params=params)
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["ts", "time", "key", "value", "min", "max"]
    exported = [(key, int(ts), float(v), float(lo), float(hi)) for ts, _, key, v, lo, hi in rows[1:]]
    shown = [(k, p["ts"], p["value"], p["min"], p["max"]) for k, points in drawn["data"].items() for p in points]
    assert params["interval"] == "10000", "auto: the finest interval with at most 2,000 points"
    assert exported == shown and len(shown) == 2 * 1050, "every 10-second bucket of both keys"


@pytest.mark.serial
async def test_in_a_browser_the_page_shows_local_time_and_queries_utc(live_hub, make_device, operator_cookie):
    """Headless Chromium at UTC+05:30: the range shows local wall-clock time, a zoom to local 07:00–08:00
    re-queries 01:30–02:30 UTC at a finer interval, and the CSV link then exports exactly the drawn points."""
    need_chromium()
    from playwright.async_api import async_playwright

    device = await sync_to_async(make_device)()
    t0 = 1_736_899_200_000  # 2025-01-15T00:00:00Z
    await store(live_hub.runtime.writer, device, [R(t0 + i * 30_000, "t", float(i % 120)) for i in range(6 * 120)])
    url = reverse("dashboards:history", args=[device.key])
    query = f"?range=custom&start={t0}&end={t0 + 6 * HOUR}&keys=t&agg=AVG"
    name, value = operator_cookie.split("=", 1)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(timezone_id="Asia/Kolkata")
            await context.add_cookies([{"name": name, "value": value, "url": live_hub.http}])
            page = await context.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(live_hub.http + url + query)
            await page.wait_for_function(
                "() => document.getElementById('history-status').textContent.includes('points')"
            )
            assert (await page.input_value("input[name=start_local]")).startswith("2025-01-15T05:30")
            axis = await page.evaluate("document.getElementById('history-chart').layout.xaxis.range")
            assert axis[0].startswith("2025-01-15 05:30") and axis[1].startswith("2025-01-15 11:30"), axis

            await page.evaluate(
                """Plotly.relayout(document.getElementById('history-chart'),
                    {'xaxis.range[0]': '2025-01-15 07:00:00', 'xaxis.range[1]': '2025-01-15 08:00:00'})"""
            )
            zoomed = f"start={t0 + 90 * MINUTE}&end={t0 + 150 * MINUTE}"
            await page.wait_for_function(f"() => document.getElementById('history-csv').href.includes('{zoomed}')")
            await page.wait_for_function(
                "() => document.getElementById('history-status').textContent.includes('every')"
            )
            href = await page.get_attribute("#history-csv", "href")
            drawn = await page.evaluate(
                """() => { const avg = document.getElementById('history-chart').data.find((t) => t.name === 't avg');
                           return avg.x.map((x, i) => [x.getTime(), avg.y[i]]); }"""
            )
            exported = await (await page.request.get(live_hub.http + href)).text()
        finally:
            await browser.close()
    _, params = csv_link(f'id="history-csv" href="{href}"')
    assert params["interval"] == "2000" and params["band"] == "1", "auto: finer buckets for the zoomed hour"
    rows = [line.split(",") for line in exported.splitlines()[1:]]
    assert [[int(r[0]), float(r[3])] for r in rows] == drawn and len(drawn) == 120
    assert not errors, errors
