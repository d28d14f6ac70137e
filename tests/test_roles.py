"""`serve --role ingest|stream`: devices and viewers on separate processes, meeting on Redis; each process
refuses what belongs to the other with a clear answer, so a load balancer that misroutes is noticed."""

import asyncio
import os
import subprocess
import sys

import httpx
import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings

from core.epoch import now_ms
from tests.conftest import ROOT, database_url_for_tests

pytestmark = pytest.mark.usefixtures("postgres", "redis")


async def started(hub_process, role: str):
    env = {"HUB_DATABASE_URL": database_url_for_tests(), "HUB_SECRET_KEY": settings.SECRET_KEY}
    env |= {"HUB_REDIS_URL": os.environ["HUB_REDIS_URL"], "HUB_CHANNEL_PREFIX": f"{os.environ['HUB_CHANNEL_PREFIX']}r"}
    return await hub_process(HUB_ROLE=role, **env).start().ready()


async def test_viewers_on_a_stream_process_follow_devices_on_an_ingest_process(
    hub_process, make_device, operator_cookie
):
    ingest, stream = await started(hub_process, "ingest"), await started(hub_process, "stream")
    device = await sync_to_async(make_device)()
    headers = {"Cookie": operator_cookie, "Origin": stream.http}
    async with websockets.connect(f"{stream.ws}/ws/v1/devices/{device.key}/stream", additional_headers=headers) as ws:
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        await ws.send(orjson.dumps({"since": now_ms()}).decode())
        assert orjson.loads(await ws.recv())["type"] == "history"
        ts = now_ms()
        async with httpx.AsyncClient(base_url=ingest.http) as client:
            posted = await client.post(f"/api/v1/{device.token}/telemetry", json={"ts": ts, "values": {"t": 21.5}})
        assert posted.status_code == 200, posted.text
        async with asyncio.timeout(10):
            live = orjson.loads(await ws.recv())
        assert live == {"type": "readings", "readings": [[ts, "t", 21.5]]}


async def test_each_role_refuses_what_belongs_to_the_other(hub_process, make_device, operator_cookie):
    ingest, stream = await started(hub_process, "ingest"), await started(hub_process, "stream")
    device = await sync_to_async(make_device)()
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{stream.ws}/ws/v1/{device.token}/telemetry"):
            pass
    assert refused.value.response.status_code == 403, "no device ingest on a stream process"
    headers = {"Cookie": operator_cookie, "Origin": ingest.http}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{ingest.ws}/ws/v1/fleet/stream", additional_headers=headers):
            pass
    assert refused.value.response.status_code == 403, "no dashboard streams on an ingest process"
    async with httpx.AsyncClient(base_url=stream.http) as client:
        misrouted = await client.post(f"/api/v1/{device.token}/telemetry", json={"t": 1})
    assert misrouted.status_code == 421
    assert misrouted.json()["error"]["code"] == "misdirected"


def test_a_role_needs_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "DJANGO_"))}
    env |= {"HUB_VAR_DIR": str(tmp_path), "HUB_SECRET_KEY": "x" * 50}
    done = subprocess.run(
        [sys.executable, "manage.py", "serve", "--role", "stream"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "--role stream needs HUB_REDIS_URL" in done.stderr


async def test_a_stream_process_yields_the_cpu_to_ingest(hub_process):
    """A stream process runs at a lower priority (HUB_STREAM_NICE): on a shared machine the devices' acks come
    first. An ingest process keeps its priority."""

    def nice(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[16])

    ingest, stream = await started(hub_process, "ingest"), await started(hub_process, "stream")
    assert nice(stream.process.pid) - nice(ingest.process.pid) == settings.HUB_STREAM_NICE == 5
