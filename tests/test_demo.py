"""`make run`'s demo on a fresh embedded hub, in headless Chromium: the back-filled week and the live devices
give every page something real on first run; the demo alert rule has fired and resolved. The pages are
screenshotted at phone and desktop widths, light and dark, into var/test-artifacts/ (docs/dashboards.md shows
them), with no inline style or script (Content-Security-Policy 'self'), a favicon, and a label on every form
control."""

import re
import sqlite3
from pathlib import Path

import pytest

from testkit.process import free_port
from tests.browser_chromium import chromium_page, need_chromium
from tests.browser_pages import ARTIFACTS
from tests.test_embedded import embedded_env, manage, manage_started  # noqa: F401 - embedded_env: the fixture
from tests.waiting import eventually

pytestmark = pytest.mark.serial


DAY_MS = 86_400_000
WIDTHS = {"phone": 390, "desktop": 1280}

# Every form control has a label: a <label> around or for it, or an aria-label.
UNLABELLED = """() => Array.from(document.querySelectorAll('main input:not([type=hidden]), main select, main textarea'))
  .filter((el) => el.labels.length === 0 && !el.getAttribute('aria-label')).map((el) => el.outerHTML)"""


@pytest.fixture
def demo(embedded_env, tmp_path):  # noqa: F811 - the fixture imported above
    """`manage.py demo` on a fresh SQLite hub (migrated as `make run` does); yields (base URL, log path)."""
    manage(embedded_env, "migrate", "--noinput")
    port = free_port()
    log = tmp_path / "demo.log"
    process = manage_started(embedded_env, log, "demo", "--port", str(port))
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.timeout(240)
async def test_the_demo_has_a_past_incidents_and_pages_worth_showing(demo, tmp_path):
    """First run: 7 days back-filled through the writer within seconds (with a progress bar), the demo rule
    fired and resolved in that past, and the fleet, device, compare and history pages all show data."""
    need_chromium()
    base, log = demo
    await eventually(lambda: "back-filled" in log.read_text(), timeout=60, what="the back-fill")
    figures = re.search(r"back-filled (\d+) readings in ([\d.]+) s", log.read_text())
    print(f"demo back-fill: {figures.group(0)}")
    assert int(figures.group(1)) > 100_000 and float(figures.group(2)) < 15
    assert "back-filling history" in log.read_text(), "a progress bar"
    with sqlite3.connect(tmp_path / "hub.sqlite3") as db:
        events = dict(db.execute("SELECT type, count(*) FROM alerts_alertevent GROUP BY type"))
        span = db.execute("SELECT min(ts), max(ts) FROM ingest_reading").fetchone()
    assert events.get("fired", 0) > 5 and events.get("resolved", 0) > 5, events
    assert span[0] < span[1], span

    async with chromium_page() as (page, errors):
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        await page.goto(f"{base}/login/")
        await page.fill("input[name=username]", "demo")
        await page.fill("input[name=password]", "demo")
        await page.click("[type=submit]")
        await page.wait_for_url(f"{base}/")
        await eventually(lambda: page.locator("#fleet tbody td.on").count(), timeout=30, what="online devices")
        assert await page.locator("#fleet tbody tr").count() == 3
        assert "site=north" in await page.text_content("#fleet tbody")
        await shoot(page, "fleet", f"{base}/", "#fleet tbody tr")

        await shoot(page, "device", f"{base}/devices/demo-1/", ".chart .main-svg")
        await page.wait_for_function(
            "() => document.querySelector('.chart[data-key=temperature]').data[0].x.length > 100"
        )
        assert await page.locator("#alert-events tbody tr").count() > 0, "alert events from the back-filled week"

        await shoot(
            page,
            "history",
            f"{base}/devices/demo-1/history/?range=7d&keys=temperature,humidity",
            "#history-chart .main-svg",
        )
        await page.wait_for_function("() => document.getElementById('history-status').textContent.includes('points')")
        oldest = await page.evaluate("document.getElementById('history-chart').data[1].x[0].getTime()")
        newest = await page.evaluate("document.getElementById('history-chart').data[1].x.at(-1).getTime()")
        assert newest - oldest > 6.9 * DAY_MS, "the history page's 7 days are filled"

        await shoot(page, "compare", f"{base}/compare/?label=site%3Dnorth&keys=temperature", ".chart .main-svg")
        await page.wait_for_function("() => document.querySelector('.chart').data.length === 2")
        assert not failed, f"every request succeeded (favicon included): {failed}"
    assert not errors, errors
    assert '"GET /' not in log.read_text(), "no access log in the demo's terminal unless asked (--access-log)"


def inline_code(html: str) -> list[str]:
    """What a Content-Security-Policy allowing only 'self' scripts and styles would block in a served page."""
    blocked = re.findall(r"<style\b|\sstyle=|\son[a-z]+=", html)
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
    return blocked + [attrs for attrs, body in scripts if body.strip() and 'type="application/json"' not in attrs]


async def shoot(page, name: str, url: str, ready: str) -> None:
    """The page at phone and desktop widths (and dark at phone width) into var/test-artifacts/<name>-*.png;
    every form control labelled, no inline <style> or script code, nothing wider than the phone's screen."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width_name, width in WIDTHS.items():
        for scheme in ("light", "dark") if width_name == "phone" else ("light",):
            await page.emulate_media(color_scheme=scheme)
            await page.set_viewport_size({"width": width, "height": 844 if width_name == "phone" else 900})
            await page.goto(url)
            await page.wait_for_selector(ready)
            await page.wait_for_timeout(500)  # let the live charts draw a few frames before the picture
            assert await page.evaluate(UNLABELLED) == [], f"{name}: every form control has a label"
            html = await (await page.request.get(url)).text()
            assert inline_code(html) == [], f"{name}: no inline <style>, style attribute or script code"
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} at {width} px: nothing wider than the screen ({overflow} px)"
            suffix = f"{width_name}-dark" if scheme == "dark" else width_name
            await page.screenshot(path=Path(ARTIFACTS) / f"{name}-{suffix}.png")
    await page.emulate_media(color_scheme="light")
