"""Browser-test fixtures and helpers (a pytest plugin of tests/conftest.py): a headless Chromium page that fails
its test on a JavaScript error, an operator, logging in through the real login form, the artifacts folder."""

from pathlib import Path

import pytest

from tests.browser_chromium import chromium_page, need_chromium
from tests.conftest import person

ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"
OPERATOR, PASSWORD = "operator", "operator-password"

# Test-side only: records each change of the page's connection state, from before the page's scripts run.
RECORD_STATES = """
window.hubStates = [];
new MutationObserver(() => {
  const el = document.getElementById("connection");
  const state = el && `${el.dataset.state}: ${el.textContent}`;
  if (state && window.hubStates[window.hubStates.length - 1] !== state) window.hubStates.push(state);
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


@pytest.fixture
async def page():
    """A headless Chromium page; the test fails if the page raised a JavaScript error."""
    need_chromium()
    async with chromium_page() as (page, errors):
        await page.add_init_script(RECORD_STATES)
        yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def operator(transactional_db) -> str:
    person(OPERATOR, password=PASSWORD)  # an operator, not an admin
    return OPERATOR


async def log_in(page, url: str) -> None:
    """Open `url`, get sent to the login page, log in there and land back on `url`."""
    await page.goto(url)
    assert "login" in page.url, page.url
    await page.fill("input[name=username]", OPERATOR)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("[type=submit]")
    await page.wait_for_url(url)
