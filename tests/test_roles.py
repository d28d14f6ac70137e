"""`serve --role ingest|stream`: devices and viewers on separate processes, meeting on Redis; each process
refuses what belongs to the other with a clear answer, so a load balancer that misroutes is noticed."""

import asyncio
import os
import subprocess
import sys

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing.websocket import WebsocketCommunicator
from django.conf import settings

from clients.viewer import ViewerClient
from core.epoch import now_ms
from hub.roles import Role
from hub.runtime import hub_runtime
from tests.conftest import ROOT, database_url_for_tests
from tests.inprocess import HandshakeRefused, in_process, in_process_client, viewer_in_process

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
    async with ViewerClient.connect(stream.ws, cookie=operator_cookie, key=device.key) as viewer:
        await viewer.catch_up(now_ms())
        ts = now_ms()
        async with httpx.AsyncClient(base_url=ingest.http) as client:
            posted = await client.post(f"/api/v1/{device.token}/telemetry", json={"ts": ts, "values": {"t": 21.5}})
        assert posted.status_code == 200, posted.text
        async with asyncio.timeout(10):
            live = await viewer.receive()
        assert live == {"type": "readings", "readings": [[ts, "t", 21.5]]}


async def test_each_role_refuses_what_belongs_to_the_other(transactional_db, make_device, operator_cookie):
    """In-process: the routes and parts of each role; a stream process builds no writer."""
    device = await sync_to_async(make_device)()
    async with hub_runtime(role=Role.INGEST) as ingest, hub_runtime(role=Role.STREAM) as stream:
        assert stream.writer is None and stream.devices is None and ingest.streams is None
        telemetry = WebsocketCommunicator(in_process(stream), f"/ws/v1/{device.token}/telemetry")
        assert (await telemetry.connect())[0] is False, "no device ingest on a stream process"
        with pytest.raises(HandshakeRefused):
            async with viewer_in_process(ingest, cookie=operator_cookie):
                pass  # no dashboard streams on an ingest process
        async with in_process_client(stream) as client:
            misrouted = await client.post(f"/api/v1/{device.token}/telemetry", json={"t": 1})
        assert misrouted.status_code == 421
        assert misrouted.json()["error"]["code"] == "misdirected"
        async with viewer_in_process(stream, cookie=operator_cookie) as fleet:
            assert fleet.opening.subscribed


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


@pytest.mark.serial
async def test_a_stream_process_yields_the_cpu_to_ingest(hub_process):
    """A stream process runs at a lower priority (HUB_STREAM_NICE): on a shared machine the devices' acks come
    first. An ingest process keeps its priority."""

    def nice(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[16])

    ingest, stream = await started(hub_process, "ingest"), await started(hub_process, "stream")
    assert nice(stream.process.pid) - nice(ingest.process.pid) == settings.HUB_STREAM_NICE == 5
