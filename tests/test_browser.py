"""The device page in a real browser (headless Chromium): its chart follows the device live, survives a cut
connection with no gap and no duplicate, says how the connection is, keeps the picked keys and the history
window in the URL, and shows device-provided text as text, never as HTML."""

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session

from alerts.models import AlertRule
from core.epoch import now_ms
from devices.models import Device
from devices.services import device_create
from storage.models import Reading
from tests.browser_pages import ARTIFACTS, log_in
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.serial, pytest.mark.usefixtures("postgres", "redis")]


def numbers(t0: int, indices: range) -> list[dict]:
    """Readings of `t` and `h`, 100 ms apart from t0."""
    return [{"ts": t0 + i * 100, "values": {"t": i, "h": i / 2}} for i in indices]


async def send(hub, token: str, batch: list[dict]) -> None:
    """A real device: one telemetry frame over WebSocket, returning once the hub acknowledged (committed) it."""
    async with websockets.connect(f"{hub.ws}/ws/v1/{token}/telemetry") as ws:
        await ws.send(orjson.dumps(batch).decode())
        reply = orjson.loads(await ws.recv())
        assert reply == {"ack": 1}, reply


@sync_to_async
def stored(device_id: int, key: str) -> list[int]:
    rows = Reading.objects.filter(device_id=device_id, key=key).order_by("ts").values_list("ts", flat=True)
    return [round(ts.timestamp() * 1000) for ts in rows]


async def plotted(page, key: str) -> list[int]:
    """The timestamps the chart of `key` draws, read from the plot itself."""
    return await page.evaluate(
        """key => {
            const chart = document.querySelector(`.chart[data-key="${key}"]`);
            return chart && chart.data ? chart.data[0].x.map((x) => new Date(x).getTime()) : [];
        }""",
        key,
    )


async def until_plotted(page, key: str, count: int) -> None:
    await page.wait_for_function(
        """([key, count]) => {
            const chart = document.querySelector(`.chart[data-key="${key}"]`);
            return chart && chart.data && chart.data[0].x.length >= count;
        }""",
        arg=[key, count],
    )


async def until_state(page, state: str) -> None:
    await page.wait_for_function("s => document.getElementById('connection').dataset.state === s", arg=state)


async def chart_keys(page) -> list[str]:
    return await page.evaluate("Array.from(document.querySelectorAll('.chart'), (c) => c.dataset.key)")


async def text_value(page, key: str) -> str | None:
    return await page.evaluate(
        """key => {
            const row = document.querySelector(`#texts tr[data-key="${key}"]`);
            return row && row.cells[1].textContent;
        }""",
        key,
    )


async def until_text(page, key: str, value: str) -> None:
    await page.wait_for_function(
        """([key, value]) => {
            const row = document.querySelector(`#texts tr[data-key="${key}"]`);
            return row && row.cells[1].textContent === value;
        }""",
        arg=[key, value],
    )


def hub_port(hub) -> int:
    return int(hub.http.rsplit(":", 1)[1])


@pytest.mark.hub_settings(HUB_STREAM_CATCHUP_LIMIT=7)  # the catch-up after the cut comes in pages
async def test_the_chart_follows_the_device_and_a_cut_connection_leaves_no_gap_and_no_duplicate(
    page, live_hub, make_device, operator, settings
):
    """History, then live readings, then a cut connection while the device goes on sending: once reconnected
    (its catch-up in several capped pages) each chart holds every stored reading exactly once, in order, and
    the page showed connecting, live, reconnecting in N s, live."""
    device = await sync_to_async(make_device)()
    t0 = now_ms() - 120_000
    await send(live_hub, device.token, [*numbers(t0, range(20)), {"ts": t0, "values": {"mode": "warming up"}}])
    proxy = await TcpProxy("127.0.0.1", hub_port(live_hub)).start()  # the browser's way in, to cut
    try:
        await log_in(page, f"http://127.0.0.1:{proxy.port}/devices/{device.key}/")
        await until_state(page, "live")
        await until_plotted(page, "t", 20)
        assert await plotted(page, "t") == await stored(device.id, "t"), "the server-rendered history"
        assert await text_value(page, "mode") == "warming up"

        await send(live_hub, device.token, numbers(t0, range(20, 30)))
        await until_plotted(page, "t", 30)

        await proxy.cut()
        await until_state(page, "reconnecting")
        missed = [*numbers(t0, range(30, 55)), {"ts": t0 + 5_500, "values": {"mode": "running"}}]
        await send(live_hub, device.token, missed)
        await proxy.restore()
        await until_state(page, "live")
        await send(live_hub, device.token, numbers(t0, range(55, 60)))
        await until_plotted(page, "t", 60)
        await until_plotted(page, "h", 60)
        for key in ("t", "h"):
            expected = await stored(device.id, key)
            assert len(expected) == 60
            assert await plotted(page, key) == expected, f"{key}: every reading once, in order"
        # text values are not in the catch-up: the page fetches them again on each connection
        await until_text(page, "mode", "running")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / "device-page.png"
        await page.screenshot(path=screenshot, full_page=True)
        print(f"device page screenshot: {screenshot}")
    finally:
        await proxy.close()

    shown = await page.evaluate("window.hubStates")
    print("connection states shown:", shown)
    states = [s.split(":")[0] for s in shown]
    assert states[0] == "connecting", shown
    assert states[states.index("live") :].count("live") == 2, shown
    assert any(s.startswith("reconnecting: reconnecting in ") and "s (connection lost)" in s for s in shown), shown
    assert "connecting: catching up…" in shown, shown


async def test_a_page_whose_session_ended_says_so_and_stops_reconnecting(page, live_hub, make_device, operator):
    """Logged out while disconnected: the reconnection is refused (4401) and the page says why, for good."""
    device = await sync_to_async(make_device)()
    proxy = await TcpProxy("127.0.0.1", hub_port(live_hub)).start()
    try:
        await log_in(page, f"http://127.0.0.1:{proxy.port}/devices/{device.key}/")
        await until_state(page, "live")
        await proxy.cut()
        await until_state(page, "reconnecting")
        await sync_to_async(Session.objects.all().delete)()
        await proxy.restore()
        await until_state(page, "closed")
        assert await page.text_content("#connection") == "closed: not logged in — log in"
        await page.click("#connection a")
        await page.wait_for_url(f"http://127.0.0.1:{proxy.port}/login/?next=%2Fdevices%2F{device.key}%2F")
    finally:
        await proxy.close()


async def test_the_picked_keys_and_the_history_window_live_in_the_url(page, live_hub, make_device, operator):
    """`?key=` picks the charts, `?window=` the history; changing either reloads with them in the URL."""
    device = await sync_to_async(make_device)()
    now = now_ms()
    old, recent = now - 30 * 60_000, now - 60_000
    await send(live_hub, device.token, [{"ts": ts, "values": {"a": 1, "b": 2, "c": 3}} for ts in (old, recent)])
    url = f"{live_hub.http}/devices/{device.key}/"
    await log_in(page, f"{url}?key=a")
    await until_state(page, "live")
    await until_plotted(page, "a", 1)
    assert await chart_keys(page) == ["a"]
    assert await plotted(page, "a") == [recent], "the default window is 15 minutes"

    await page.select_option("select[name=window]", "1h")
    await page.wait_for_url(f"{url}?window=1h&key=a")
    await until_plotted(page, "a", 2)
    assert await plotted(page, "a") == [old, recent]

    await page.check("input[name=key][value=c]")
    await page.wait_for_url(f"{url}?window=1h&key=a&key=c")
    await until_state(page, "live")
    await until_plotted(page, "c", 2)
    await send(live_hub, device.token, [{"ts": now, "values": {"a": 4, "b": 5}}])
    await until_plotted(page, "a", 3)
    assert await chart_keys(page) == ["a", "c"], "an unpicked key stays off the page, live too"
    assert await page.input_value("select[name=window]") == "1h"

    await page.goto(f"{url}?window=1y")
    assert await page.input_value("select[name=window]") == "15m", "an unknown window falls back to the default"
    await until_plotted(page, "b", 2)
    assert await chart_keys(page) == ["a", "b", "c"], "no key picked: every key"


async def test_device_provided_text_is_shown_as_text_never_as_html(page, live_hub, operator):
    """A device name, text values (server-rendered and live) full of markup appear literally and run nothing."""
    name = '<img src=x onerror="window.pwned = 1">'
    device, token = await sync_to_async(device_create)(key="marked-up", name=name)
    rendered = '<img src=x onerror="window.pwned = 2"><b>bold</b>'
    live = "<script>window.pwned = 3</script>"
    await send(live_hub, token, [{"ts": now_ms() - 1_000, "values": {"note": rendered, "v": 1}}])
    await log_in(page, f"{live_hub.http}/devices/{device.key}/")
    await until_state(page, "live")
    assert await text_value(page, "note") == rendered
    await send(live_hub, token, [{"ts": now_ms(), "values": {"note": live, "other": live}}])
    await until_text(page, "note", live)
    await until_text(page, "other", live)
    assert (await page.text_content("h1")).startswith(name)
    assert await page.locator("main img, main b, main script:not([src]):not([type])").count() == 0
    assert await page.evaluate("window.pwned") is None


@pytest.mark.hub_settings(HUB_ALERT_RULES_REFRESH_SECONDS=0)
async def test_alerts_show_on_the_device_page_live_with_thresholds_on_the_chart(
    page, live_hub, make_device, operator, settings
):
    """A threshold rule draws its line on the key's chart; when readings break it, the firing banner and the
    event list update live, without a reload; recovery resolves it the same way. Rule names stay text."""
    device = await sync_to_async(make_device)()
    await sync_to_async(AlertRule.objects.create)(
        name="<b>hot</b>", device_id=device.id, key="t", condition="gt", threshold=30.0, severity="critical"
    )
    await send(live_hub, device.token, [{"ts": now_ms() - 5_000, "values": {"t": 20.0}}])
    await log_in(page, f"{live_hub.http}/devices/{device.key}/")
    await until_state(page, "live")
    await until_plotted(page, "t", 1)
    shapes = await page.evaluate("document.querySelector('.chart[data-key=\"t\"]').layout.shapes")
    assert [(s["y0"], s["line"]["color"]) for s in shapes] == [(30.0, "#dc2626")]
    assert await page.is_hidden("#firing")

    await send(live_hub, device.token, [{"ts": now_ms(), "values": {"t": 35.0}}])
    await page.wait_for_function("() => !document.getElementById('firing').hidden")
    assert await page.text_content("#firing") == "Firing: <b>hot</b> (critical)"
    assert await page.get_attribute("#firing", "class") == "sev-critical"
    first = await page.evaluate(
        "Array.from(document.querySelector('#alert-events tbody').rows[0].cells, c => c.textContent)"
    )
    assert first[1:] == ["fired", "<b>hot</b>", "critical", "35"]

    await send(live_hub, device.token, [{"ts": now_ms() + 1, "values": {"t": 25.0}}])
    await page.wait_for_function("() => document.getElementById('firing').hidden")
    assert await page.evaluate("document.querySelector('#alert-events tbody').rows.length") == 2
    assert await page.locator("main b").count() == 0


@pytest.mark.hub_settings(HUB_FLEET_DIGEST_SECONDS=0.1)
async def test_the_fleet_page_pages_a_thousand_devices_filters_them_and_updates_live(
    page, live_hub, operator, settings
):
    """1,000 devices: the first page of 100 rows; the filter narrows them as it is typed (and goes into the URL);
    a device that reports changes its row (value, online, last seen, rate) live, without a reload; names are
    text, never markup."""

    @sync_to_async
    def fleet() -> str:
        Device.objects.bulk_create(
            Device(key=f"unit-{i:04d}", name=f"Unit {i}", token_hash=f"unit{i:04d}".ljust(64, "0")) for i in range(999)
        )
        return device_create(key="boiler", name="Boiler <b>room</b>")[1]

    token = await fleet()
    await log_in(page, f"{live_hub.http}/")
    assert await page.locator("#fleet tbody tr").count() == 100
    assert await page.text_content("[data-count=matched]") == "1000"
    assert await page.text_content("#page-info") == "page 1 of 10"
    await page.wait_for_function("() => document.getElementById('state').textContent === 'live'")

    await page.fill("#filter", "boiler")
    await page.wait_for_function("() => document.querySelectorAll('#fleet tbody tr').length === 1")
    assert page.url.endswith("/?q=boiler")
    row = page.locator("#fleet tbody tr")
    assert (await row.locator("td").nth(0).text_content()).startswith("Boiler <b>room</b>")
    assert await row.locator("td").nth(1).text_content() == "never"

    await send(live_hub, token, [{"ts": now_ms(), "values": {"temperature": 21.25, "state": "ok"}}])
    await page.wait_for_function(
        "() => document.querySelector('#fleet tbody tr td:nth-child(5)').textContent.includes('21.25')"
    )
    assert await row.locator("td").nth(1).text_content() == "online"
    assert (await row.locator("td").nth(2).text_content()).endswith("s ago")
    assert "state=ok" in await row.locator("td").nth(4).text_content()
    assert await row.locator("td").nth(3).text_content() == "1", "readings in the last minute, live"
    await page.fill("#filter", "unit-09")
    await page.wait_for_function("() => document.querySelectorAll('#fleet tbody tr').length === 99")
    assert await page.locator("main b:not(#fleet td:nth-child(5) b)").count() == 0, "names are text, not markup"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.fill("#filter", "")
    await page.screenshot(path=ARTIFACTS / "fleet-page.png")


@pytest.mark.hub_settings(HUB_READS_PER_PROCESS=1, HUB_READS_LIGHT_POINTS=0)  # every window a heavy read
async def test_a_page_whose_window_the_hub_refuses_for_now_asks_again_after_retry_after(
    page, live_hub, make_device, operator
):
    """While the hub serves as many heavy reads as it takes, the window is answered 429 with Retry-After; the page
    asks again after it and draws the window once a slot is free (instead of giving up on it)."""
    device = await sync_to_async(make_device)()
    t0 = now_ms() - 60_000
    await send(live_hub, device.token, numbers(t0, range(10)))
    admission = live_hub.runtime.history.admission
    held = admission.admit(("user", -1))  # someone's export holds the only slot
    refused: list[int] = []
    page.on("response", lambda r: "/window?" in r.url and r.status == 429 and refused.append(r.status))
    try:
        await log_in(page, f"{live_hub.http}/devices/{device.key}/")
        await page.wait_for_function("() => true")  # the page's scripts have run
        for _ in range(100):
            if refused:
                break
            await page.wait_for_timeout(50)  # polling the browser's responses
        assert refused, "the window was refused while the slot was held"
        assert await plotted(page, "t") == [], "nothing drawn yet: the window is not answered"
    finally:
        held.release()
    await until_plotted(page, "t", 10)
    assert await plotted(page, "t") == [t0 + i * 100 for i in range(10)]
    note = await page.text_content("#window-note")
    assert "could not load" not in note, note
