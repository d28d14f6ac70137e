"""Headless Chromium for the browser tests: Debian's `chromium` package driven by Playwright.

Never `playwright install`: the browser comes from the system package (`.ci/run` and `make system-deps` install it).
Without it the tests skip with the reason shown, or fail under HUB_REQUIRE_SERVICES=1, as tests/services.py does.
"""

import contextlib
import importlib.util
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from tests.services import REQUIRED

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Page

CHROMIUM = os.environ.get("HUB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_chromium() -> None:
    """Skip (or, under HUB_REQUIRE_SERVICES=1, fail) the calling test without Chromium or Playwright."""
    if not os.access(CHROMIUM, os.X_OK):
        problem = f"Chromium is not installed at {CHROMIUM} (`make system-deps`: apt-get install chromium)"
    elif importlib.util.find_spec("playwright") is None:
        problem = "the playwright package is not installed (pip install -e '.[dev]')"
    else:
        return
    if REQUIRED:
        pytest.fail(f"{problem} and HUB_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{problem} (set HUB_REQUIRE_SERVICES=1 to fail instead)")


@contextlib.asynccontextmanager
async def chromium_page() -> AsyncIterator[tuple["Page", list[str]]]:
    """A fresh browser and page, with the list the page's uncaught JavaScript errors and Content-Security-Policy
    violations (what the hub's policy blocked: a script or style that would not run or apply) are collected in."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: _collect_csp_violation(message, errors))
            yield page, errors
        finally:
            await browser.close()


def _collect_csp_violation(message: "ConsoleMessage", errors: list[str]) -> None:
    if message.type == "error" and "Content Security Policy" in message.text:
        errors.append(message.text)
