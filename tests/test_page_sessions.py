"""The operator's pages for real use (issue 25): their controls work from the keyboard without losing its place, a
session that ends (a logout in another tab, a deleted session) stops the pages' live parts and says so, and after a
hub restart every live page is live again within 5 s of the hub returning, with a "Retry now" meanwhile. In
headless Chromium against a served hub, except the server's own side of an ended session."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext

import tests.conftest
from core.epoch import now_ms
from core.protocol import Close
from live.sessions import sessions_alive
from tests.browser_pages import log_in
from tests.conftest import free_port, served_hub, session_cookie
from tests.inprocess import viewer_in_process
from tests.tcp_proxy import TcpProxy
from tests.test_browser import hub_port, send, until_state
from tests.test_scoped_streams import sentinel, until

pytestmark = pytest.mark.usefixtures("postgres", "redis")

BANNER = "#session-ended"

# Test-side only: every WebSocket the page opens is counted, from before its scripts run.
COUNT_SOCKETS = """
window.hubSockets = 0;
window.WebSocket = class extends window.WebSocket {
  constructor(...args) { super(...args); window.hubSockets++; }
};
"""

# Test-side only: when (the browser's clock) each badge of the page last turned live, and what the page's
# live regions said, from before the page's scripts run.
RECORD_LIVE = """
window.hubLiveAt = {};
window.hubSaid = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll(".connection, #state")) {
    const live = el.id === "state" ? el.textContent === "live" : el.dataset.state === "live";
    const name = el.id || el.closest("li").dataset.device;
    if (live && !window.hubLiveAt[name]) window.hubLiveAt[name] = Date.now();
    if (!live) delete window.hubLiveAt[name];
  }
  const said = document.querySelector("main > .visually-hidden[role=status]");
  const text = said && said.textContent;
  if (text && window.hubSaid[window.hubSaid.length - 1] !== text) window.hubSaid.push(text);
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


async def focused(page) -> str:
    """The id of the element that has the keyboard's focus."""
    return await page.evaluate("document.activeElement ? document.activeElement.id : ''")


async def tab_to(page, element_id: str, limit: int = 60) -> None:
    """Press Tab until the element `element_id` has the focus (it is in the Tab order)."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await focused(page) == element_id:
            return
    raise AssertionError(f"#{element_id} is not reached by Tab in {limit} presses")


async def until_focused(page, element_id: str) -> None:
    await page.wait_for_function("id => document.activeElement && document.activeElement.id === id", arg=element_id)


async def new_tab(page, url: str):
    """Another tab of the page's browser (same cookies), opened on `url` (the page's own context owns it)."""
    async with page.expect_popup() as opened:
        await page.evaluate("url => window.open(url)", url)
    tab = await opened.value
    await tab.wait_for_load_state()
    # A popup's first page keeps the window of its initial blank document, whose init scripts watched that
    # document: a reload gives it a window and init scripts of its own.
    await tab.reload()
    return tab


async def chart_keys(page) -> list[str]:
    return await page.evaluate("Array.from(document.querySelectorAll('.chart'), (c) => c.dataset.key)")


async def fleet_order(page) -> list[str]:
    return await page.evaluate("Array.from(document.querySelectorAll('#fleet tbody tr'), (tr) => tr.dataset.key)")


@pytest.mark.serial
async def test_the_controls_apply_from_the_keyboard_and_keep_its_place(page, live_hub, make_device, operator):
    """Keyboard only: the skip link is the first Tab stop and moves the focus to the content; arrowing through the
    device page's window selector reloads nothing until Enter, which applies the window and leaves the focus on
    the selector; Space on a key's checkbox applies it with the focus on that checkbox; a window stepped to and
    left with Tab applies with the focus where Tab went; Enter on the fleet's "Device" header sorts by name, then
    reversed, the focus staying on that header."""
    device = await sync_to_async(make_device)("dev-b")
    for key in ("dev-c", "dev-a"):
        await sync_to_async(make_device)(key)
    await send(live_hub, device.token, [{"ts": now_ms() - 1_000, "values": {"a": 1, "b": 2}}])
    url = f"{live_hub.http}/devices/{device.key}/"
    await log_in(page, url)
    await until_state(page, "live")

    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content", "the first Tab stop"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.tagName") == "MAIN"
    assert await focused(page) == "content"

    await tab_to(page, "picker-window")
    await page.evaluate("window.sameDocument = true")  # gone if the page reloads
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("ArrowDown")
    assert await page.input_value("#picker-window") == "6h", "arrowing steps through the windows"
    await page.wait_for_timeout(300)  # a reload, had one started, would have replaced the document by now
    assert await page.evaluate("window.sameDocument === true"), "arrowing reloads nothing"
    assert page.url.partition("#")[0] == url
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{url}?window=6h")
    await until_focused(page, "picker-window")
    assert await page.input_value("#picker-window") == "6h"
    await until_state(page, "live")

    await page.keyboard.press("Tab")
    assert await focused(page) == "picker-key-a"
    await page.keyboard.press("Space")
    await page.wait_for_url(f"{url}?window=6h&key=a")
    await until_focused(page, "picker-key-a")
    assert await page.is_checked("#picker-key-a")
    await until_state(page, "live")
    await page.wait_for_function("() => document.querySelector('.chart')")
    assert await chart_keys(page) == ["a"]

    await page.keyboard.press("Shift+Tab")
    assert await focused(page) == "picker-window"
    await page.keyboard.press("ArrowUp")
    await page.keyboard.press("Tab")  # leaving the selector applies the window it was left on
    await page.wait_for_url(f"{url}?window=1h&key=a")
    await until_focused(page, "picker-key-a")
    assert await page.input_value("#picker-window") == "1h"

    await page.goto(f"{live_hub.http}/")
    await tab_to(page, "sort-device")
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{live_hub.http}/?sort=name")
    await until_focused(page, "sort-device")
    assert await fleet_order(page) == ["dev-a", "dev-b", "dev-c"]
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{live_hub.http}/?sort=-name")
    await until_focused(page, "sort-device")
    assert await fleet_order(page) == ["dev-c", "dev-b", "dev-a"]


async def test_a_logout_in_another_tab_ends_the_device_page_within_seconds(page, live_hub, make_device, operator):
    """A device page live, then "Log out" in another tab of the same browser: within 5 s the hub closes the page's
    stream (4401) and the page says "Session ended — log in again" (the link logs in and comes back), shows its
    stream closed and opens no other, a zoom afterwards included (the message stays, once)."""
    device = await sync_to_async(make_device)()
    await send(live_hub, device.token, [{"ts": now_ms() - 1_000, "values": {"t": 1}}])
    await page.add_init_script(COUNT_SOCKETS)
    url = f"{live_hub.http}/devices/{device.key}/"
    await log_in(page, url)
    await until_state(page, "live")
    await page.wait_for_function("() => document.querySelector('.chart') && document.querySelector('.chart').data")

    other = await new_tab(page, f"{live_hub.http}/")
    await other.click("header form button")  # "Log out"
    await other.wait_for_url("**/login/")
    logged_out = time.monotonic()
    await page.wait_for_selector(BANNER, timeout=5_000)
    ended_after = time.monotonic() - logged_out
    print(f"session ended shown {ended_after:.1f} s after the logout in another tab")
    assert ended_after <= 5
    assert await page.text_content(BANNER) == "Session ended — log in again"
    assert await page.get_attribute(BANNER, "role") == "alert"
    assert await page.get_attribute(f"{BANNER} a", "href") == f"/login/?next=%2Fdevices%2F{device.key}%2F"
    assert await page.evaluate("document.getElementById('connection').dataset.state") == "closed"
    sockets = await page.evaluate("window.hubSockets")

    await page.evaluate(
        """([a, b]) => Plotly.relayout(document.querySelector('.chart'),
              {'xaxis.range[0]': HubCharts.toPlotly(a), 'xaxis.range[1]': HubCharts.toPlotly(b)})""",
        [now_ms() - 60_000, now_ms()],
    )
    await page.wait_for_timeout(3_000)  # the period watched: a page that reconnected would have within it
    assert await page.locator(BANNER).count() == 1, "one message"
    assert await page.evaluate("window.hubSockets") == sockets, "no reconnection once the session ended"
    assert await page.evaluate("document.getElementById('connection').dataset.state") == "closed"

    await page.click(f"{BANNER} a")
    await page.wait_for_url(f"{live_hub.http}/login/?next=%2Fdevices%2F{device.key}%2F")


@pytest.mark.hub_settings(HUB_STREAM_SCOPE_REFRESH_SECONDS=600)  # the streams stay open: the fetches must tell
async def test_a_refused_fetch_ends_the_session_and_stops_the_streams(page, live_hub, make_device, operator):
    """The session deleted on the server while the streams stay open: on the device page a zoom's fetch (401) and
    on the fleet page the filter's refetch (sent to the login page) show "Session ended" and close the page's
    stream, instead of failing silently (issue 25: a 401 in the console, the filter doing nothing)."""
    device = await sync_to_async(make_device)()
    await send(live_hub, device.token, [{"ts": now_ms() - 1_000, "values": {"t": 1}}])
    await log_in(page, f"{live_hub.http}/devices/{device.key}/")
    await until_state(page, "live")
    await page.wait_for_function("() => document.querySelector('.chart') && document.querySelector('.chart').data")
    await sync_to_async(Session.objects.all().delete)()
    await page.evaluate(
        """([a, b]) => Plotly.relayout(document.querySelector('.chart'),
              {'xaxis.range[0]': HubCharts.toPlotly(a), 'xaxis.range[1]': HubCharts.toPlotly(b)})""",
        [now_ms() - 60_000, now_ms()],
    )
    await page.wait_for_selector(BANNER, timeout=5_000)
    assert await page.text_content("#connection") == "closed: not logged in — log in"

    await log_in(page, f"{live_hub.http}/")
    await page.wait_for_function("() => document.getElementById('state').textContent === 'live'")
    await sync_to_async(Session.objects.all().delete)()
    await page.fill("#filter", device.key)
    await page.wait_for_selector(BANNER, timeout=5_000)
    assert await page.text_content("#state") == "session ended"


@pytest.mark.hub_settings(HUB_STREAM_SCOPE_REFRESH_SECONDS=0.2)
async def test_a_stream_whose_session_ended_is_closed_as_not_logged_in(runtime, operator_user):
    """Two sessions of one operator, a fleet stream each: one session deleted (a logout) closes its stream with
    4401 within a refresh; the other's stream goes on receiving."""
    name = operator_user.username
    first, second = await sync_to_async(session_cookie)(name), await sync_to_async(session_cookie)(name)
    async with (
        viewer_in_process(runtime, cookie=first) as ended,
        viewer_in_process(runtime, cookie=second) as going_on,
    ):
        await sync_to_async(Session.objects.filter(session_key=first.partition("=")[2]).delete)()
        async with asyncio.timeout(5):
            assert await ended.closed() == Close.UNAUTHENTICATED
        await asyncio.sleep(0.5)  # two more refreshes, which must leave the other stream open
        await until(going_on, await sentinel(runtime, "any-device"))


@pytest.mark.django_db(transaction=True)
def test_the_sessions_alive_are_read_in_one_query(operator_user):
    """Of three sessions, one deleted and one expired: one query, whatever their number, names the one alive."""
    from datetime import timedelta

    from django.utils import timezone

    keys = [session_cookie(operator_user.username).partition("=")[2] for _ in range(3)]
    Session.objects.filter(session_key=keys[0]).delete()
    Session.objects.filter(session_key=keys[1]).update(expire_date=timezone.now() - timedelta(seconds=1))
    with CaptureQueriesContext(connection) as queries:
        alive = sessions_alive({*keys, "never-was"})
    assert alive == {keys[2]}
    assert len(queries) == 1


@pytest.mark.serial
@pytest.mark.timeout(180)
async def test_every_live_page_is_live_within_5_s_of_a_restarted_hub(page, make_device, operator, monkeypatch):
    """A device page, a compare page and the fleet page open; the hub stops for 10 s and a new one starts on the
    same port against the same database: each page is live again within 5 s of it listening. Meanwhile each shows
    "Retry now", and its screen-reader announcements are state changes, not the countdown's every second."""
    port = free_port()
    monkeypatch.setattr(tests.conftest, "free_port", lambda: port)  # served_hub serves on this port each time
    device = await sync_to_async(make_device)()
    await page.context.add_init_script(RECORD_LIVE)
    async with served_hub() as hub:
        await send(hub, device.token, [{"ts": now_ms() - 1_000, "values": {"t": 1}}])
        await log_in(page, f"{hub.http}/devices/{device.key}/")
        pages = {
            "device": page,
            "compare": await new_tab(page, f"{hub.http}/compare/?devices={device.key}&keys=t"),
            "fleet": await new_tab(page, f"{hub.http}/"),
        }
        for each in pages.values():
            await each.wait_for_function("() => Object.keys(window.hubLiveAt).length > 0")
    await page.wait_for_function("() => document.getElementById('connection').dataset.state === 'reconnecting'")
    await page.wait_for_timeout(10_000)  # the outage itself
    for name, each in pages.items():
        assert await each.is_visible("button.retry-now"), f"{name}: Retry now while waiting"
    outage_said = await page.evaluate("window.hubSaid.slice()")
    async with served_hub():
        listening = time.time() * 1000
        for each in pages.values():
            await each.wait_for_function("() => Object.keys(window.hubLiveAt).length > 0", timeout=30_000)
        waits = {name: (max((await each.evaluate("window.hubLiveAt")).values()) - listening) / 1000
                 for name, each in pages.items()}  # fmt: skip
        for name, each in pages.items():
            assert not await each.is_visible("button.retry-now"), f"{name}: no Retry now once live"
    print("live again after the hub listened: " + ", ".join(f"{name} {s:.2f} s" for name, s in waits.items()))
    assert all(s <= 5 for s in waits.values()), waits
    assert outage_said == ["live", "connection lost: reconnecting"], "said once each, not every second"
    assert await page.get_attribute("#connection", "aria-live") is None, "the countdown is not a live region"
    assert await page.get_attribute("#connection", "role") is None


@pytest.mark.serial
async def test_retry_now_reconnects_without_waiting_out_the_backoff(page, live_hub, make_device, operator):
    """The connection cut long enough for the backoff to reach seconds, then back: "Retry now" (by keyboard) makes
    the page live again at once, before its countdown ran out."""
    device = await sync_to_async(make_device)()
    proxy = await TcpProxy("127.0.0.1", hub_port(live_hub)).start()
    try:
        await log_in(page, f"http://127.0.0.1:{proxy.port}/devices/{device.key}/")
        await until_state(page, "live")
        assert not await page.is_visible("button.retry-now")
        await proxy.cut()
        await page.wait_for_function(
            "() => /reconnecting in [34] s/.test(document.getElementById('connection').textContent)", timeout=20_000
        )
        await proxy.restore()
        await page.focus("button.retry-now")
        left = int((await page.text_content("#connection")).split("reconnecting in ")[1].split(" s")[0])
        clicked = time.monotonic()
        await page.keyboard.press("Enter")
        await until_state(page, "live")
        waited = time.monotonic() - clicked
        print(f"live {waited:.2f} s after Retry now, with {left} s of backoff left")
        assert waited < left - 1, "live before the countdown ran out"
        assert not await page.is_visible("button.retry-now")
        assert await focused(page) == "connection", "the keyboard stays by the status, not at the top"
    finally:
        await proxy.close()
