"""The operators' surface: streams only from the hub's own origin, logins throttled, a Content-Security-Policy on every
page, a production configuration that `check --deploy` passes."""

import asyncio
import os
import re
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async

from clients.viewer import ViewerClient, WebsocketsSocket, stream_url
from tests.conftest import ROOT, database_url_for_tests
from tests.hostile.common import hub_address
from tests.ledger import bystanders

pytestmark = pytest.mark.usefixtures("postgres")


async def test_a_stream_opens_only_from_the_hubs_own_origin(live_hub, make_device, operator_cookie, settings):
    """Finding 8: with a valid session, a dashboard stream opens for the hub's own origin (scheme, host and port)
    or a trusted one, and is refused (403) for another port, another scheme, another allowed host name, no
    Origin, or `null`."""
    device = await sync_to_async(make_device)()
    settings.CSRF_TRUSTED_ORIGINS = ["https://hub.example.com", "https://*.example.org"]
    port = hub_address(live_hub)[1]
    allowed = [live_hub.http, f"http://127.0.0.1:{port}/", "https://hub.example.com", "https://ops.example.org:443"]
    refused = [
        "http://127.0.0.1:9999",
        "https://127.0.0.1",
        f"https://127.0.0.1:{port}",
        f"http://localhost:{port}",
        "http://hub.example.com",
        "https://hub.example.com:8443",
        "https://example.org",
        "null",
        None,
    ]
    outcome: dict[str | None, int] = {}
    ws_good, http_good = [await sync_to_async(make_device)() for _ in range(2)]
    async with bystanders(live_hub, (ws_good.key, ws_good.token), (http_good.key, http_good.token)) as seen:
        for origin in allowed + refused:
            headers = {"Cookie": operator_cookie} | ({"Origin": origin} if origin else {})
            for key in (device.key, None):  # its device stream, the fleet's
                try:
                    async with websockets.connect(stream_url(live_hub.ws, key), additional_headers=headers) as ws:
                        await ViewerClient.opened(WebsocketsSocket(ws), device=key is not None)  # subscribed
                        outcome[origin] = 101
                except websockets.InvalidStatus as exc:
                    outcome[origin] = exc.response.status_code
    assert outcome == {origin: 101 for origin in allowed} | {origin: 403 for origin in refused}, outcome
    await seen.unharmed()


async def login(client: httpx.AsyncClient, username: str, password: str) -> int:
    """Submit the login form as a browser does (CSRF cookie and token); the status of the answer."""
    page = (await client.get("/login/")).text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    return (await client.post("/login/", data=form, headers={"Referer": f"{client.base_url}login/"})).status_code


async def test_logins_are_throttled_and_every_page_has_a_content_security_policy(live_hub, make_device, settings):
    """Finding 9: after HUB_LOGIN_FAILURE_LIMIT (5) wrong passwords for one user from one address, even the right
    one is refused (429) until the cool-off; another user is unaffected; every page (and the admin's) carries a
    Content-Security-Policy allowing the hub's own scripts and styles only."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    await sync_to_async(users.create_user)("victim", password="right")
    await sync_to_async(users.create_user)("other", password="right")
    ws_good, http_good = [await sync_to_async(make_device)() for _ in range(2)]
    async with (
        bystanders(live_hub, (ws_good.key, ws_good.token), (http_good.key, http_good.token)) as seen,
        httpx.AsyncClient(base_url=live_hub.http) as client,
    ):
        answers = [await login(client, "victim", f"wrong-{i}") for i in range(200)]
        assert answers[:4] == [200] * 4 and set(answers[4:]) == {429}, answers  # the form again, then locked
        assert await login(client, "victim", "right") == 429
        assert await login(client, "other", "right") == 302
        settings.AXES_COOLOFF_TIME = timedelta(seconds=0.5)
        # Not a wait for an event: the cool-off is time passing (and an attempt while locked out starts it anew).
        await asyncio.sleep(0.6)
        assert await login(client, "victim", "right") == 302
        for path in ("/login/", "/", "/alerts/", "/admin/login/", "/healthz", "/api/v1/devices/x/latest"):
            policy = (await client.get(path)).headers.get("Content-Security-Policy", "")
            directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
            assert directives["script-src"] == "'self'", (path, policy)
            styles = directives["style-src"].split()  # 'self' and Plotly's styles by hash, nothing else
            assert styles[0] == "'self'" and all(s.startswith("'sha256-") for s in styles[1:]), (path, policy)
            assert "unsafe-inline" not in policy
    await seen.unharmed()


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path):
    """Finding 9: `manage.py check --deploy` with docs/deployment.md's TLS-behind-a-proxy settings reports nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "DJANGO_"))}
    env |= {
        "HUB_VAR_DIR": str(tmp_path),
        "HUB_DATABASE_URL": database_url_for_tests(),
        "HUB_REDIS_URL": "redis://127.0.0.1:6379/0",
        "HUB_SECRET_KEY": "Zs8x-" + "k3Jq9vLw2TfR7pYb" * 4,
        "HUB_ALLOWED_HOSTS": "hub.example.com",
        "HUB_CSRF_TRUSTED_ORIGINS": "https://hub.example.com",
        "HUB_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
        "HUB_HSTS_SECONDS": "31536000",
        "HUB_HSTS_INCLUDE_SUBDOMAINS": "1",
        "HUB_HSTS_PRELOAD": "1",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and "no issues" in result.stdout, result.stdout + result.stderr
