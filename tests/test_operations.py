"""Operations: liveness, readiness with reasons, Prometheus metrics, request ids and JSON logs."""

import json
import logging
import re
from pathlib import Path

import httpx
from asgiref.sync import sync_to_async

from core.logs import ThrottledLog, request_id_from
from tests.conftest import free_port
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent


async def test_health_ready_and_metrics(live_hub, make_device, postgres, redis):
    """With PostgreSQL and Redis up: healthz and readyz are 200; metrics count what was ingested."""
    device = await sync_to_async(make_device)()
    async with httpx.AsyncClient(base_url=live_hub.http) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "channel_layer": "ok"}
        assert (await client.post(f"/api/v1/{device.token}/telemetry", json={"a": 1, "b": 2})).status_code == 200
        assert (await client.post(f"/api/v1/{device.token}/telemetry", content="[1]")).status_code == 400
        response = await client.get("/metrics", headers={"X-Request-ID": "trace-42"})
        assert response.headers["X-Request-ID"] == "trace-42"
        text = response.text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['hub_readings_received_total{transport="http"}'] >= 2
    assert samples['hub_readings_stored_total{transport="http"}'] >= 2
    assert samples['hub_messages_rejected_total{code="invalid_shape",transport="http"}'] >= 1
    assert samples['hub_ack_latency_seconds_count{transport="http"}'] >= 1
    assert samples["hub_writer_flush_seconds_count"] >= 1


async def test_readyz_is_503_naming_what_is_unreachable(hub_process):
    """Database and Redis unreachable: alive (healthz 200) but not ready, with a reason per check."""
    hub = (
        await hub_process(
            HUB_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
            HUB_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        )
        .start()
        .ready()
    )
    async with httpx.AsyncClient(base_url=hub.http, timeout=10) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] != "ok" and body["checks"]["channel_layer"] != "ok"


async def test_json_logs_carry_request_ids_and_no_tokens(hub_process):
    """HUB_LOG_FORMAT=json writes one JSON object per line, with the request id, tokens redacted."""
    hub = await hub_process(migrate=True, HUB_LOG_FORMAT="json").start().ready()
    log = hub.log
    async with httpx.AsyncClient(base_url=hub.http) as client:
        response = await client.post(
            "/api/v1/secret-token-123/telemetry", json={"a": 1}, headers={"X-Request-ID": "req-7"}
        )
        assert response.status_code == 401
    await eventually(lambda: "Unauthorized" in log.read_text(), what="the 401 to be logged")
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    unauthorized = [line for line in lines if line["message"].startswith("Unauthorized")]
    assert unauthorized and unauthorized[0]["request_id"] == "req-7"
    assert {"time", "level", "logger", "message"} <= set(unauthorized[0])
    assert "secret-token-123" not in log.read_text()


async def test_readyz_flips_when_postgres_or_redis_goes_and_comes_back(make_device, hub_process, tmp_path):
    """/readyz answers 503 naming PostgreSQL, then Redis, while each is unreachable, and 200 once it is back."""
    from django.db import connection

    from tests.conftest import database_url_for_tests
    from tests.redis_server import RedisServer
    from tests.tcp_proxy import TcpProxy

    settings_dict = connection.settings_dict
    proxy = await TcpProxy(settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432)).start()
    redis_server = RedisServer(tmp_path).start()
    hub = hub_process(
        HUB_DATABASE_URL=database_url_for_tests(host="127.0.0.1", port=proxy.port), HUB_REDIS_URL=redis_server.url
    )
    await hub.start().ready()

    async def ready() -> tuple[int, dict]:
        async with httpx.AsyncClient(base_url=hub.http, timeout=10) as client:
            response = await client.get("/readyz")
            return response.status_code, response.json()["checks"]

    try:
        assert await ready() == (200, {"database": "ok", "channel_layer": "ok"})
        await proxy.cut()
        status, checks = await ready()
        assert status == 503 and checks["database"] != "ok" and checks["channel_layer"] == "ok"
        await proxy.restore()
        await eventually(lambda: _is(ready, 200), what="ready again after PostgreSQL returns")
        redis_server.stop()
        status, checks = await ready()
        assert status == 503 and checks["channel_layer"] != "ok" and checks["database"] == "ok"
        redis_server.start()
        await eventually(lambda: _is(ready, 200), what="ready again after Redis returns")
    finally:
        redis_server.stop()
        await proxy.close()


async def _is(probe, status: int) -> bool:
    return (await probe())[0] == status


def test_a_recurring_warning_is_logged_once_per_interval_with_a_count(caplog):
    throttled = ThrottledLog(logging.getLogger("hub.test.throttle"), interval=60)
    for attempt in range(5):
        throttled.warning("redis down (%d)", attempt)
    assert [r.getMessage() for r in caplog.records] == ["redis down (0)"]
    throttled._next = 0.0  # the interval has passed
    throttled.warning("redis down (%d)", 5)
    assert caplog.records[-1].getMessage() == "redis down (5) (and 4 more like it in the last 60 s)"


def test_a_request_without_a_sane_id_gets_a_new_random_one():
    assert request_id_from("trace-42") == "trace-42"
    made = {request_id_from(header) for header in (None, "", "bad id", "x" * 65, "a\nb") for _ in range(20)}
    assert len(made) == 100 and all(re.fullmatch("[0-9a-f]{32}", rid) for rid in made)
