"""axe-core on every operator page, in Chromium, at 1440 px and 390 px, light and dark: no violation of any rule
(issue 25). The hub is `manage.py demo` on SQLite, with rules of each severity firing and a device that never
reported, so the badges, statuses, banners, charts and tables the rules look at are on the pages. The pictures
taken on the way are docs/dashboards.md's screenshots (var/test-artifacts/pages/)."""

import time
from dataclasses import dataclass

import pytest

from testkit.process import free_port
from tests.browser_chromium import chromium_page, need_chromium
from tests.browser_pages import ARTIFACTS
from tests.test_embedded import embedded_env, manage, manage_started  # noqa: F401 - embedded_env: the fixture
from tests.waiting import eventually

pytestmark = pytest.mark.serial

SHOTS = ARTIFACTS / "pages"
PASSWORD = "demo"  # the demo's people (hub/management/commands/demo.py)

# A rule of each severity firing a second after the demo starts (the fleet's badges, the alerts page's rows): no
# reading of a key the demo never sends. No-data rules draw no threshold line, so the charts keep their scale.
FIRING_RULES = """
from alerts.models import AlertRule
for device, severity in (("demo-1", "critical"), ("demo-2", "warning"), ("demo-3", "info")):
    AlertRule.objects.create(name="No pressure reading", device_pattern=device, kind="no_data",
                             key="pressure", no_data_seconds=1, severity=severity)
"""


# Each chart is a figure described by its summary in words (summaries.js): latest value, lowest and highest, and a
# link to its data as CSV.
UNSUMMARISED = """() => Array.from(document.querySelectorAll('.chart, #history-chart')).flatMap((chart) => {
  const summary = document.getElementById(chart.getAttribute('aria-describedby'));
  const text = summary ? summary.textContent : '';
  const ok = chart.getAttribute('role') === 'figure' && /latest .* lowest .* highest/.test(text)
    && summary.querySelector('a[href*=".csv"]');
  return ok ? [] : [`a chart without its summary: ${chart.outerHTML.slice(0, 80)} ${text}`];
})"""


# The device page's Firing banner is read out when it changes: it sits in a live region.
FIRING_ANNOUNCED = """() => { const banner = document.getElementById('firing');
  return !banner.hidden && banner.textContent.includes('No pressure reading')
    && banner.closest('[aria-live=polite]') !== null; }"""


@dataclass(frozen=True)
class Look:
    """A width and a colour scheme the pages are checked in."""

    name: str
    width: int
    height: int
    scheme: str


LOOKS = (
    Look("desktop", 1440, 900, "light"),
    Look("phone", 390, 844, "light"),
    Look("dark", 1440, 900, "dark"),
    Look("phone-dark", 390, 844, "dark"),
)


@dataclass(frozen=True)
class Page:
    """A page to check: its path, what shows it is ready, whether its pictures go into the docs, the rules not run."""

    name: str
    path: str
    ready: str
    shoot: bool = False
    unchecked: tuple[str, ...] = ()


# Before logging in.
PUBLIC = (
    Page("login", "/login/", "form"),
    Page("not-allowed", "/alerts/1/ack", "h1"),  # a GET to a POST-only address: the 405 page
)
CHARTED = ".chart-summary"  # summaries.js: the page's charts are described (then UNSUMMARISED must hold)
PAGES = (
    Page("fleet", "/", "#fleet .badge.sev-info", shoot=True),
    Page("device", "/devices/demo-1/", CHARTED, shoot=True),
    Page("history", "/devices/demo-1/history/?range=7d&keys=temperature,humidity", CHARTED, shoot=True),
    Page("compare", "/compare/?label=site%3Dnorth&keys=temperature", CHARTED, shoot=True),
    Page("compare-empty", "/compare/", "#compare-form"),
    Page("alerts", "/alerts/", "tr.sev-info"),
    Page("rules", "/alerts/rules/", "main form[method=post] button"),
    Page("rule", "/alerts/rules/1/", "main form[method=post] button"),
    Page("not-found", "/devices/no-such-device/", "h1"),
    # Not run on the API docs: rules that only Swagger UI's own markup breaks (a third-party bundle served as it
    # comes): its HTTP-method badges and version stamps are white on light colours (2.2-3.1:1), each operation's
    # summary is a button holding a link and a copy button, its tag headings (h3) follow its title (h1), and its
    # title block sits outside its own main landmark. The rest, and what the hub wraps it in, is checked.
    Page(
        "api-docs",
        "/api/v1/docs",
        ".opblock",
        unchecked=("color-contrast", "nested-interactive", "heading-order", "region"),
    ),
)


@pytest.fixture
async def hub(embedded_env, tmp_path):  # noqa: F811 - the fixture imported above
    """The demo on a fresh SQLite hub (its week of history), three rules firing and a device that never reported;
    yields its base URL."""
    manage(embedded_env, "migrate", "--noinput")
    manage(embedded_env, "createdevice", "spare-1", "--name", "Spare sensor", "--labels", "site=south")
    manage(embedded_env, "shell", "-c", FIRING_RULES)
    port = free_port()
    log = tmp_path / "demo.log"
    env = {**embedded_env, "HUB_ALERT_SILENCE_CHECK_SECONDS": "0.5"}
    process = manage_started(env, log, "demo", "--port", str(port))

    def ready() -> bool:
        assert process.poll() is None, f"the demo stopped:\n{log.read_text()[-3000:]}"
        return "back-filled" in log.read_text()

    try:
        await eventually(ready, timeout=60, what="the demo's back-fill")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def described(url: str, look: Look, violations: list[dict]) -> list[str]:
    """One line per violation: the rule, its impact and where (the first few nodes)."""
    lines = []
    for v in violations:
        targets = "; ".join(" ".join(node["target"]) for node in v["nodes"][:4])
        why = v["nodes"][0].get("failureSummary", "").replace("\n", " ")
        lines.append(f"{url} [{look.name}] {v['id']} ({v['impact']}, {len(v['nodes'])} nodes): {targets} -- {why}")
    return lines


async def test_every_page_passes_axe_at_both_widths_light_and_dark(hub):
    """Login and the 405 page (logged out); fleet, device, history, compare, alerts, rules, a rule, the 404 page and
    the API docs (as an operator), each at 1440 px and 390 px in light and dark: axe-core finds nothing (any rule,
    any impact); every chart has its summary and CSV link, the Firing banner is in a live region."""
    need_chromium()
    from axe_playwright_python.async_playwright import Axe
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    base = hub
    began = time.monotonic()
    axe = Axe()
    SHOTS.mkdir(parents=True, exist_ok=True)
    found: list[str] = []
    async with chromium_page() as (page, errors):

        async def check(item: Page, look: Look) -> None:
            await page.emulate_media(color_scheme=look.scheme)
            await page.set_viewport_size({"width": look.width, "height": look.height})
            await page.goto(base + item.path)
            await page.wait_for_selector(item.ready, state="attached")
            if item.ready == CHARTED:
                try:
                    await page.wait_for_function(f"() => ({UNSUMMARISED})().length === 0", timeout=10_000)
                except PlaywrightTimeout:
                    found.extend(f"{item.path}: {problem}" for problem in await page.evaluate(UNSUMMARISED))
            if item.name == "device" and not await page.evaluate(FIRING_ANNOUNCED):
                found.append(f"{item.path}: the Firing banner is not shown in a live region")
            options = {"resultTypes": ["violations"], "rules": {rule: {"enabled": False} for rule in item.unchecked}}
            results = await axe.run(page, options=options)
            found.extend(described(item.path, look, results.response["violations"]))
            if item.shoot:
                await page.screenshot(path=SHOTS / f"{item.name}-{look.name}.png")

        for item in PUBLIC:
            for look in LOOKS:
                await check(item, look)
        await page.goto(f"{base}/login/")
        await page.fill("input[name=username]", "operator")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("[type=submit]")
        await page.wait_for_url(f"{base}/")
        for item in PAGES:
            for look in LOOKS:
                await check(item, look)
    print(f"axe: {len(PUBLIC) + len(PAGES)} pages x {len(LOOKS)} looks in {time.monotonic() - began:.1f} s")
    assert not found, "axe-core violations:\n" + "\n".join(found)
    assert not errors, errors
