"""The embedded default (`make run`'s configuration): SQLite + in-memory layer, no server at all.

Runs the real `manage.py` commands in subprocesses with a clean environment (no HUB_DATABASE_URL, no
HUB_REDIS_URL), so it also checks that tokens never reach the logs.
"""

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from clients.viewer import ViewerClient
from core.epoch import now_ms
from tests.conftest import free_port
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "DJANGO_"))}
    env.update(HUB_VAR_DIR=str(tmp_path), DJANGO_SUPERUSER_PASSWORD="pw")
    return env


def manage_started(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    """`manage.py ARGS` running in the background, its output (both streams) into `log`."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def login_cookie(client: httpx.AsyncClient) -> str:
    """Log in through the real login form (CSRF included) and return the Cookie header."""
    await client.get("/admin/login/")
    csrf = client.cookies["csrftoken"]
    response = await client.post(
        "/admin/login/?next=/admin/",
        data={"username": "op", "password": "pw", "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{client.base_url}/admin/login/"},
    )
    assert response.status_code == 302, response.text
    return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


async def check_history_on_sqlite(client: httpx.AsyncClient, ts: int) -> None:
    """The SQLite dialect buckets and streams like PostgreSQL's (the logged-in client's session)."""
    params = {"keys": "t", "start": ts - 1000, "end": ts + 1000, "agg": "AVG", "interval": 1}
    body = (await client.get("/api/v1/devices/kitchen/telemetry", params=params)).json()
    assert "data" in body, body
    assert body["data"]["t"] == [{"ts": ts, "value": 1.5}, {"ts": ts + 1, "value": 2.5}]
    params["interval"] = 3_600_000
    hour = ts - ts % 3_600_000
    buckets = [(hour, 2.0)] if ts % 3_600_000 != 3_599_999 else [(hour, 1.5), (hour + 3_600_000, 2.5)]
    body = (await client.get("/api/v1/devices/kitchen/telemetry", params=params)).json()
    assert [(p["ts"], p["value"]) for p in body["data"]["t"]] == buckets
    csv_text = (await client.get("/api/v1/devices/kitchen/telemetry.csv", params={"keys": "t", "start": ts - 1})).text
    assert csv_text.splitlines()[1:] == [f"{ts},{iso(ts)},t,1.5", f"{ts + 1},{iso(ts + 1)},t,2.5"]


def iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


async def test_embedded_default_ingests_stores_and_streams_without_servers(embedded_env, tmp_path):
    """With no database or Redis server, the hub migrates, ingests over HTTP and WebSocket, and streams."""
    manage(embedded_env, "migrate", "--noinput")
    token = manage(embedded_env, "createdevice", "kitchen").strip().splitlines()[-1]
    manage(embedded_env, "createsuperuser", "--noinput", "--username", "op", "--email", "op@example.com")
    port = free_port()
    hub = manage_started(embedded_env, tmp_path / "hub.log", "serve", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/admin/login/")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout=30, what="the hub to listen")
            cookie = await login_cookie(client)
            async with ViewerClient.connect(base, cookie=cookie, key="kitchen") as stream:
                await stream.catch_up(now_ms() - 5_000)
                ts = now_ms()
                response = await client.post(f"/api/v1/{token}/telemetry", json={"ts": ts, "values": {"t": 1.5}})
                assert response.status_code == 200
                async with websockets.connect(f"ws://127.0.0.1:{port}/ws/v1/{token}/telemetry") as ws:
                    await ws.send(orjson.dumps([{"ts": ts + 1, "values": {"t": 2.5}}, {"h": "text"}]).decode())
                    assert orjson.loads(await ws.recv()) == {"ack": 1}
                live = []
                async with asyncio.timeout(10):
                    while len(live) < 3:
                        live += (await stream.receive())["readings"]
                assert [r[1:] for r in live] == [["t", 1.5], ["t", 2.5], ["h", "text"]]
            bad = await client.post(f"/api/v1/{token}/telemetry", content="{")
            assert bad.status_code == 400
            await check_history_on_sqlite(client, ts)
    finally:
        hub.terminate()
        hub.wait(timeout=30)  # uvicorn re-raises SIGTERM after a graceful shutdown

    with sqlite3.connect(tmp_path / "hub.sqlite3") as db:
        assert db.execute("SELECT key, value FROM ingest_reading ORDER BY ts").fetchall() == [("t", 1.5), ("t", 2.5)]
        assert dict(db.execute("SELECT key, coalesce(text, value) FROM ingest_latestvalue")) == {"t": 2.5, "h": "text"}
    logs = (tmp_path / "hub.log").read_text()
    assert "writer drained" in logs, "SIGTERM drains the writer before exit"
    assert "POST /api/v1/***/telemetry" in logs
    assert token not in logs, "device tokens never appear in logs"


async def test_simulate_streams_local_devices_into_a_running_hub_and_ends_with_a_table(hub_process, tmp_path):
    """`simulate --devices N` creates sim-1..N, streams to the hub at --url, and prints its final figures."""
    hub = await hub_process(migrate=True).start().ready()  # no HUB_DATABASE_URL: SQLite in tmp_path
    try:
        args = ["simulate", "--devices", "2", "--rate", "20", "--seconds", "2", "--url", hub.ws]
        output = await asyncio.to_thread(manage, hub.env, *args)
    finally:
        hub.stop()
    assert "simulate: 2 devices" in output and "(done)" in output
    acked = int(re.search(r"acked (\d+)", output).group(1))
    query = "SELECT d.key, count(*) FROM ingest_reading r JOIN devices_device d ON d.id = r.device_id GROUP BY d.key"
    with sqlite3.connect(tmp_path / "hub.sqlite3") as db:
        per_device = dict(db.execute(query))
    assert set(per_device) == {"sim-1", "sim-2"}
    assert acked > 40 and sum(per_device.values()) >= 3 * acked, "3 numeric keys per acked message, all stored"
