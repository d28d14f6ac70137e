"""Hostile and bad input through the real server: refused with a clear error or close code, nothing
stored, the hub keeps serving others. Also token revocation, rate limits and dead-peer detection."""

import asyncio
import contextlib
import html
import logging
import os
import re
import select
import socket
import subprocess
import sys
import time
from datetime import timedelta

import httpx
import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.utils.timezone import now as django_now
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core.epoch import now_ms
from devices.services import device_token_rotate
from hub.asgi import router
from ingest.client import DeviceClient
from ingest.models import LatestValue, Reading
from ingest.parsing import MAX_MAGNITUDE
from tests import rawws
from tests.conftest import ROOT, database_url_for_tests, served_hub
from tests.ledger import bystanders
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("postgres")


@sync_to_async
def stored(device_id: int) -> int:
    return Reading.objects.filter(device_id=device_id).count()


async def still_serving(hub, token: str) -> None:
    """Another connection gets its reading acked: the hub kept serving."""
    async with websockets.connect(f"{hub.ws}/ws/v1/{token}/telemetry") as ws:
        await ws.send('{"alive": 1}')
        assert orjson.loads(await ws.recv()) == {"ack": 1}


def hub_address(hub) -> tuple[str, int]:
    host, port = hub.http.removeprefix("http://").split(":")
    return host, int(port)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("[" * 5000 + "]" * 5000, "malformed_json"),  # deep nesting
        ('{"big": 123456789012345678901234567890}', "invalid_value"),  # huge integer (beyond 64 bits: a double)
        ('{"big": 9007199254740993}', "invalid_value"),  # beyond 2^53
        ('{"x": NaN}', "malformed_json"),
        ('{"x": Infinity}', "malformed_json"),
        ('{"x": 1e999}', "malformed_json"),
        ('{"ts": 1764000000, "values": {"x": 1}}', "ts_unit"),  # seconds, not milliseconds
        ('{"ts": 1764000000000000, "values": {"x": 1}}', "ts_unit"),  # microseconds
        ('{"x": {"nested": 1}}', "invalid_value"),
        ("null", "invalid_shape"),
    ],
)
async def test_bad_frames_get_an_error_and_store_nothing(live_hub, make_device, frame, code):
    device, other = [await sync_to_async(make_device)() for _ in range(2)]
    async with websockets.connect(f"{live_hub.ws}/ws/v1/{device.token}/telemetry") as ws:
        await ws.send(frame)
        reply = orjson.loads(await ws.recv())
    if code == "invalid_value" and "123456789012345678901234567890" in frame:
        # orjson reads integer literals beyond 64 bits as doubles, which are finite: stored as a double.
        assert reply == {"ack": 1}
    else:
        assert reply["error"]["code"] == code, reply
        assert reply["error"]["frame"] == 1
        assert await stored(device.id) == 0
    await still_serving(live_hub, other.token)


async def test_compression_is_not_negotiated_and_invalid_utf8_closes_1007(live_hub, make_device):
    """permessage-deflate offered by the client is declined (no decompression bombs); a text frame of
    invalid UTF-8 closes the socket with 1007; a binary frame gets an error frame."""
    device, other = [await sync_to_async(make_device)() for _ in range(2)]
    host, port = hub_address(live_hub)
    path = f"/ws/v1/{device.token}/telemetry"
    offer = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
    reader, writer, response = await rawws.handshake(host, port, path, offer)
    assert response.startswith("HTTP/1.1 101")
    assert "sec-websocket-extensions" not in response.lower()
    writer.write(rawws.frame(0x2, b'{"x": 1}'))
    opcode, payload = await rawws.read_frame(reader)
    assert orjson.loads(payload)["error"]["code"] == "unsupported_frame"
    writer.write(rawws.frame(0x1, b'{"x": "\xff\xfe"}'))
    assert await asyncio.wait_for(rawws.close_code(reader), 5) == 1007
    writer.close()
    assert await stored(device.id) == 0
    await still_serving(live_hub, other.token)


async def test_a_silent_peer_is_closed_by_ping_timeout(transactional_db, make_device):
    """A client that never answers pings (half-open, dead) is disconnected after interval + timeout."""
    device = await sync_to_async(make_device)()
    async with served_hub(ws_ping_interval=0.3, ws_ping_timeout=0.3) as hub:
        host, port = hub_address(hub)
        reader, writer, response = await rawws.handshake(host, port, f"/ws/v1/{device.token}/telemetry")
        assert response.startswith("HTTP/1.1 101")
        started = time.monotonic()
        async with asyncio.timeout(10):
            while await reader.read(4096):  # pings arrive and go unanswered, until the server hangs up
                pass
        assert time.monotonic() - started < 5
        writer.close()


@pytest.fixture
def fast_recheck(settings):
    settings.HUB_TOKEN_RECHECK_SECONDS = 0.2


async def test_a_connected_device_is_disconnected_when_its_token_is_rotated(fast_recheck, live_hub, make_device):
    device = await sync_to_async(make_device)()
    async with websockets.connect(f"{live_hub.ws}/ws/v1/{device.token}/telemetry") as ws:
        await ws.send('{"x": 1}')
        assert orjson.loads(await ws.recv()) == {"ack": 1}
        await sync_to_async(device_token_rotate)(key=device.key)
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                await ws.recv()
        assert closed.value.rcvd.code == 4403
        assert time.monotonic() - started < 3


@pytest.fixture
def rate_limited(settings):
    """100 readings/s per device, burst 100 (read when the hub starts)."""
    settings.HUB_DEVICE_RATE_LIMIT = 100
    settings.HUB_DEVICE_RATE_BURST = 100


async def test_rate_limit_refuses_the_excess_of_one_device_only(rate_limited, live_hub, make_device):
    """Over the per-device rate: an error frame (WebSocket) or 429 (HTTP), not stored; others unaffected."""
    noisy, quiet = [await sync_to_async(make_device)() for _ in range(2)]
    t0 = now_ms() - 60_000
    batch = orjson.dumps([{"ts": t0 + i, "values": {"x": i}} for i in range(80)]).decode()
    async with websockets.connect(f"{live_hub.ws}/ws/v1/{noisy.token}/telemetry") as ws:
        await ws.send(batch)
        assert orjson.loads(await ws.recv()) == {"ack": 1}
        await ws.send(batch)  # 80 more within the same instant: over the 100-reading bucket
        reply = orjson.loads(await ws.recv())
        assert reply["error"]["code"] == "rate_limited" and reply["error"]["frame"] == 2
    async with httpx.AsyncClient(base_url=live_hub.http) as client:
        response = await client.post(f"/api/v1/{noisy.token}/telemetry", content=batch)
        assert response.status_code == 429
        assert (await client.post(f"/api/v1/{quiet.token}/telemetry", content=batch)).status_code == 200
    assert await stored(noisy.id) == 80
    assert await stored(quiet.id) == 80


_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_key = st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True)
_value = st.one_of(st.floats(-MAX_MAGNITUDE, MAX_MAGNITUDE), st.booleans(), st.integers(-(2**53), 2**53))
_valid = st.dictionaries(_key, _value, min_size=1, max_size=5)
_invalid = st.one_of(
    st.text(max_size=50).filter(lambda s: not s.strip().startswith(("{", "["))),
    st.dictionaries(st.text(min_size=1, max_size=3).filter(lambda k: not _KEY.fullmatch(k)), _value, min_size=1),
    st.dictionaries(_key, st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2), min_size=1),
)


async def test_fuzzed_frames_valid_are_stored_once_invalid_get_errors(live_hub, make_device, caplog):
    """Random frames through the real endpoint: valid ones stored exactly once, invalid ones answered with an
    error frame and storing nothing; no unhandled exception is logged."""
    device = await sync_to_async(make_device)()
    frames: list[tuple[str, dict | None]] = []

    @hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(_valid.map(lambda d: ("valid", d)), _invalid.map(lambda d: ("invalid", d))))
    def collect(example):
        kind, body = example
        if kind == "valid":
            ts = now_ms() - 100_000 + len(frames)  # unique ts per frame: each reading is new
            frames.append((orjson.dumps({"ts": ts, "values": body}).decode(), body))
        else:
            frames.append((body if isinstance(body, str) else orjson.dumps(body).decode(), None))

    collect()
    caplog.set_level(logging.WARNING)
    async with DeviceClient.connect(live_hub.ws, device.token) as client:
        for text, _body in frames:
            await client.send(text)
        async with asyncio.timeout(30):
            await client.all_acked()
    errors = set(client.errors)
    invalid = {i + 1 for i, (_text, body) in enumerate(frames) if body is None}
    assert errors == invalid
    expected = sum(len(body) for _text, body in frames if body is not None)
    assert await stored(device.id) == expected
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


async def test_a_connection_flood_is_refused_past_the_limit(transactional_db, make_device, settings):
    """Past HUB_MAX_CONNECTIONS new WebSockets get 503; existing ones keep working."""
    device = await sync_to_async(make_device)()
    settings.HUB_MAX_CONNECTIONS = 3
    async with served_hub() as hub:
        url = f"{hub.ws}/ws/v1/{device.token}/telemetry"
        async with websockets.connect(url) as a, websockets.connect(url), websockets.connect(url):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(url):
                    pass
            assert refused.value.response.status_code == 503
            await a.send('{"x": 1}')
            assert orjson.loads(await a.recv()) == {"ack": 1}
        cap = router.application_mapping["websocket"]
        await eventually(lambda: cap.open == 0, what="closed sockets to leave the count")
        await still_serving(hub, device.token)


async def test_unstorable_values_get_a_final_error_and_never_fail_another_device(live_hub, make_device):
    """Finding 1: a device sending what the database cannot store (NUL in text; numbers whose hourly sum would
    overflow a double) every 10 ms over HTTP and WebSocket is answered with a final error naming the key (HTTP
    4xx with `retry: false`, an error frame: never 500 or 1011), and the devices beside it notice nothing."""
    hostile, ws_good, http_good = [await sync_to_async(make_device)() for _ in range(3)]
    bodies = ['{"s": "a\\u0000b"}', '{"x": 1e308}', '{"y": -1e301}']
    answers: set[tuple] = set()
    async with (
        bystanders(live_hub, (ws_good.key, ws_good.token), (http_good.key, http_good.token)) as seen,
        httpx.AsyncClient(base_url=live_hub.http) as client,
        websockets.connect(f"{live_hub.ws}/ws/v1/{hostile.token}/telemetry") as ws,
    ):
        for i in range(150):
            body = bodies[i % 3]
            response = await client.post(f"/api/v1/{hostile.token}/telemetry", content=body)
            error = response.json()["error"]
            answers.add(("http", response.status_code, error["code"], error.get("key"), error.get("retry")))
            await ws.send(body)
            error = orjson.loads(await ws.recv())["error"]
            answers.add(("ws", error["code"], error["key"]))
            assert orjson.loads(await ws.recv()) == {"ack": i + 1}
            await asyncio.sleep(0.01)  # pace: every 10 ms, as in the report
    assert answers == {
        ("http", 422, "unstorable_value", "s", False),
        ("http", 400, "value_out_of_range", "x", False),
        ("http", 400, "value_out_of_range", "y", False),
        ("ws", "unstorable_value", "s"),
        ("ws", "value_out_of_range", "x"),
        ("ws", "value_out_of_range", "y"),
    }
    await seen.unharmed()
    assert await stored(hostile.id) == 0


def body_taken(host: str, port: int, head: bytes, total: int) -> tuple[int, bytes]:
    """Send `head`, then up to `total` bytes of body in 64 KiB pieces (as chunked transfer encoding when `head`
    says so), until the hub answers or stops taking them; returns the body bytes the socket took and the answer.
    The socket's send buffer is small (16 KiB) so what it took is close to what the hub let in."""
    chunked = b"chunked" in head.lower()
    piece = b"x" * 65_536
    frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    taken, answer, pending = 0, b"", b""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)
        sock.settimeout(10)
        sock.connect((host, port))
        sock.sendall(head)
        try:
            while taken < total:
                readable, writable, _ = select.select([sock], [sock], [], 10)
                if readable:
                    break  # the hub answered
                if not writable:
                    raise AssertionError(f"the hub neither answered nor read for 10 s ({taken} bytes taken)")
                pending = pending or frame
                sent = sock.send(pending)
                pending, taken = pending[sent:], taken + sent
            while chunk := sock.recv(65_536):
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # the hub closed with our bytes unread: the kernel resets the connection
    return taken, answer


async def test_bodies_are_checked_before_they_are_read(live_hub, make_device):
    """Finding 3: 400 MiB sent to the ingest path with an unknown token, to a valid token with Content-Length
    200 MiB or chunked, and to any other path: each is refused (401, 413) after at most a few hundred KiB have
    left the sender, never read to the end (nor spooled to disk by Django); the devices beside them notice nothing."""
    device, ws_good, http_good = [await sync_to_async(make_device)() for _ in range(3)]
    host, port = hub_address(live_hub)
    head = "POST {path} HTTP/1.1\r\nHost: {host}\r\n{length}\r\n"
    chunked, mib = "Transfer-Encoding: chunked\r\n", 1 << 20
    cases = {
        "unknown token, chunked": ("/api/v1/no-such-token/telemetry", chunked, 400 * mib, b" 401 "),
        "Content-Length 200 MiB": (
            f"/api/v1/{device.token}/telemetry",
            f"Content-Length: {200 * mib}\r\n",
            200 * mib,
            b" 413 ",
        ),
        "valid token, chunked": (f"/api/v1/{device.token}/telemetry", chunked, 400 * mib, b" 413 "),
        "another path, chunked": ("/login/", chunked, 400 * mib, b" 413 "),
    }
    taken: dict[str, int] = {}
    async with bystanders(live_hub, (ws_good.key, ws_good.token), (http_good.key, http_good.token)) as seen:
        for name, (path, length, total, status) in cases.items():
            request = head.format(path=path, host=host, length=length).encode()
            taken[name], answer = await asyncio.to_thread(body_taken, host, port, request, total)
            assert answer == b"" or answer.startswith(b"HTTP/1.1" + status), (name, answer[:200])
    print("body bytes taken before the refusal:", taken)
    assert max(taken[name] for name in list(cases)[:3]) < 1 * mib, taken  # the ingest limit is 64 KiB
    assert taken["another path, chunked"] < 4 * mib, taken  # DATA_UPLOAD_MAX_MEMORY_SIZE is 2.5 MiB
    await seen.unharmed()
    async with httpx.AsyncClient(base_url=live_hub.http) as client:  # a chunked body within the limit is fine

        async def body():
            yield b'{"chunked": 1}'

        assert (await client.post(f"/api/v1/{device.token}/telemetry", content=body())).status_code == 200
        bad = await client.post("/api/v1/no-such-token/telemetry", content=b'{"x": 1}')
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"


async def test_slow_clients_are_cut_off_and_the_hub_keeps_serving(transactional_db, make_device, settings):
    """Finding 4: 100 sockets that never send a byte, 50 that send a request's headers a byte every 0.2 s and 50
    that send a body a byte every 0.2 s are all closed within the header (1 s) or body (1.5 s) timeout, while
    /healthz answers 200 and the devices beside them notice nothing."""
    settings.HUB_HTTP_HEADER_TIMEOUT_SECONDS = 1.0
    settings.HUB_HTTP_BODY_TIMEOUT_SECONDS = 1.5
    device, ws_good, http_good = [await sync_to_async(make_device)() for _ in range(3)]
    async with served_hub() as hub:
        host, port = hub_address(hub)
        slow_head = f"POST /api/v1/{device.token}/telemetry HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n"

        async def slowloris(kind: str) -> float:
            started = time.monotonic()
            reader, writer = await asyncio.open_connection(host, port)
            if kind == "body":
                writer.write((slow_head + "\r\n").encode())  # the headers at once, then the body a byte at a time
            try:
                async with asyncio.timeout(10):
                    if kind == "idle":
                        await reader.read()
                    else:
                        for byte in (slow_head.encode() if kind == "headers" else b"") + b"x" * 100:
                            writer.write(bytes([byte]))
                            if await _closed_within(reader, 0.2):
                                break
            except ConnectionResetError:
                pass
            finally:
                writer.close()
            return time.monotonic() - started

        async with bystanders(hub, (ws_good.key, ws_good.token), (http_good.key, http_good.token)) as seen:
            kinds = ["idle"] * 100 + ["headers"] * 50 + ["body"] * 50
            holding = [asyncio.create_task(slowloris(kind)) for kind in kinds]
            async with httpx.AsyncClient(base_url=hub.http) as client:
                assert (await client.get("/healthz")).status_code == 200
            closed = await asyncio.gather(*holding)
    by_kind = {kind: max(t for k, t in zip(kinds, closed, strict=True) if k == kind) for kind in set(kinds)}
    print(f"slow sockets closed after at most: { {k: round(v, 2) for k, v in by_kind.items()} } s")
    assert by_kind["idle"] < 2.5 and by_kind["headers"] < 2.5 and by_kind["body"] < 4.5, by_kind
    await seen.unharmed()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True once the hub has closed the connection (after its 408, if any); False after `seconds` of waiting."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
            return True
    except TimeoutError:
        return False


async def test_half_sent_requests_at_the_connection_limit_hold_it_only_until_their_timeout(transactional_db, settings):
    """Finding 4: with HUB_MAX_CONNECTIONS=100 taken by 100 half-sent requests that their sender never closes,
    /healthz answers 200 again within the header timeout (1 s), not when the attacker lets go."""
    settings.HUB_HTTP_HEADER_TIMEOUT_SECONDS = 1.0
    settings.HUB_MAX_CONNECTIONS = 100
    async with served_hub() as hub:
        host, port = hub_address(hub)
        held = [await asyncio.open_connection(host, port) for _ in range(100)]
        for _reader, writer in held:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: h\r\n")  # and never the blank line
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=hub.http) as client:

            async def healthy() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await eventually(healthy, timeout=5, what="/healthz to answer 200 while the sockets are held")
        print(f"/healthz 200 again {time.monotonic() - started:.2f} s after 100 half-sent requests took every slot")
        assert time.monotonic() - started < 2.5
        for _reader, writer in held:
            writer.close()


async def test_no_token_reaches_the_logs_of_a_hostile_run(make_device, hub_process):
    """Finding 5: a hub logging at DEBUG is sent tokens in every path a device (or a prober) might use: ThingsBoard's
    attributes and rpc paths, other cases and versions, 404s, WebSockets, refused bodies. Its whole log holds none of
    the tokens (nor those of two devices sending beside it), though it logs each request (the token as ***)."""
    devices = [await sync_to_async(make_device)() for _ in range(4)]
    unknown = "unknown-TOKEN-0123456789"
    tokens = [d.token for d in devices] + [unknown]
    hub = await hub_process(HUB_DATABASE_URL=database_url_for_tests(), HUB_LOG_LEVEL="DEBUG").start().ready()
    seen = bystanders(hub, (devices[2].key, devices[2].token), (devices[3].key, devices[3].token))
    paths = ["/api/v1/{}/telemetry", "/api/v1/{}/attributes", "/api/v1/{}/rpc", "/api/v1/{}/Telemetry",
             "/API/v1/{}/telemetry", "/api/v2/{}/telemetry", "/api/v1/{}", "/api/v1/{}/telemetry?x=1"]  # fmt: skip
    async with seen as seen, httpx.AsyncClient(base_url=hub.http) as client:
        for token in tokens[:2] + [unknown]:
            for path in paths:
                await client.post(path.format(token), content=b'{"x": 1}')
                await client.get(path.format(token))
            await client.post(f"/api/v1/{token}/telemetry", content=b"x" * 70_000)  # 413
            await client.post(f"/api/v1/{token}/telemetry", content=b"{not json")  # 400
            for path in ("/ws/v1/{}/telemetry", "/ws/v1/{}/attributes", "/WS/v1/{}/telemetry"):
                with contextlib.suppress(websockets.InvalidStatus):
                    async with websockets.connect(f"{hub.ws}{path.format(token)}") as ws:
                        await ws.send("{bad")
                        await ws.recv()
    await seen.unharmed()
    hub.stop()
    log = hub.log.read_text()
    assert log.count("/api/v1/***/attributes") >= 6 and "/ws/v1/***/attributes" in log, log[-3000:]
    leaked = [token for token in tokens if token in log]
    assert leaked == [], [line for line in log.splitlines() if any(t in line for t in leaked)][:5]


async def test_a_device_is_held_to_its_key_budget_and_its_pages_stay_fast(live_hub, make_device, operator_cookie):
    """Finding 6: a device sending 30 frames of 1,000 new keys gets its first 1,000 keys (the default
    HUB_MAX_KEYS_PER_DEVICE) and `too_many_keys` naming the first new key after that; readings of keys it has
    go on; and at the limit its device page, history page, history API and the fleet page each answer within 1 s."""
    device, ws_good, http_good = [await sync_to_async(make_device)() for _ in range(3)]
    t0 = now_ms() - 3_600_000
    async with (
        bystanders(live_hub, (ws_good.key, ws_good.token), (http_good.key, http_good.token)) as seen,
        DeviceClient.connect(live_hub.ws, device.token) as client,
    ):
        for frame in range(30):
            values = {f"k{frame}-{i}": i for i in range(1000)}
            await client.send(orjson.dumps({"ts": t0 + frame, "values": values}).decode())
        for step in range(1, 10):  # the 1,000 keys it has, again and again
            await client.send(
                orjson.dumps({"ts": t0 + 1000 + step, "values": {f"k0-{i}": i for i in range(1000)}}).decode()
            )
        await asyncio.wait_for(client.all_acked(), 30)
    assert sorted(client.errors) == list(range(2, 31))
    assert client.errors[2]["code"] == "too_many_keys" and client.errors[2]["key"] == "k1-0", client.errors[2]
    await seen.unharmed()
    assert await stored(device.id) == 10_000
    timings: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=live_hub.http, headers={"Cookie": operator_cookie}, timeout=30) as web:
        for name, path in {
            "device page": f"/devices/{device.key}/",
            "history page": f"/devices/{device.key}/history/",
            "history API, limit=1": f"/api/v1/devices/{device.key}/telemetry?limit=1",
            "history API, AVG": f"/api/v1/devices/{device.key}/telemetry?agg=AVG&start={t0 - 1}&end={t0 + 2000}",
            "fleet page": "/",
        }.items():
            started = time.monotonic()
            response = await web.get(path)
            timings[name] = round(time.monotonic() - started, 3)
            assert response.status_code == 200, (name, response.text[:300])
            if name == "history page":  # and what its chart and its CSV link ask for
                csv = html.unescape(re.search(r'href="([^"]*telemetry\.csv\?[^"]*)"', response.text)[1])
                for what, url in (("history chart", csv.replace("telemetry.csv", "telemetry")), ("CSV", csv)):
                    started = time.monotonic()
                    answer = await web.get(url)
                    timings[what] = round(time.monotonic() - started, 3)
                    assert answer.status_code == 200, (what, answer.text[:300])
    print(f"at 1,000 keys: {timings} s")
    assert max(timings.values()) < 1.0, timings


def rule_form(client, **fields) -> tuple[int, str]:
    """POST the alert rules page's form; (status, page text)."""
    data = {"name": "hot", "enabled": "on", "key": "t", "kind": "threshold", "condition": "gt", "threshold": "30",
            "duration_seconds": 0, "hysteresis": 0, "no_data_seconds": 0, "severity": "info"} | fields  # fmt: skip
    response = client.post("/alerts/rules/", data)
    return response.status_code, response.content.decode()


async def test_webhooks_cannot_be_pointed_inside_the_hubs_network(make_device, settings):
    """Finding 7: an operator who is not staff cannot set a rule's webhook URL; staff cannot point one at a loopback,
    private, link-local or mapped address, nor at a name resolving to one, unless HUB_ALERT_WEBHOOK_ALLOW lists it;
    and a delivery whose URL leads inside by the time it is sent is refused then: recorded failed, never sent."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from alerts.models import AlertEvent, AlertRule, WebhookDelivery
    from alerts.webhooks import webhooks_deliver_due
    from tests.webhook_receiver import WebhookReceiver

    device = await sync_to_async(make_device)()
    receiver = WebhookReceiver()

    def through_the_form() -> None:
        LatestValue.objects.create(device_id=device.id, key="t", ts=django_now(), value=1.0)
        users = get_user_model().objects
        operator, staff = Client(), Client()
        operator.force_login(users.create_user("op", password="pw"))
        staff.force_login(users.create_user("boss", password="pw", is_staff=True))
        status, page = rule_form(operator, webhook_url="https://hooks.example.com/x")
        assert status == 400 and "only staff" in page
        for inside in (receiver.url, "http://localhost:8000/", "http://10.1.2.3/", "http://169.254.169.254/latest/",
                       "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/"):  # fmt: skip
            status, page = rule_form(staff, webhook_url=inside)
            assert status == 400 and "inside the hub" in page, (inside, status)
        assert not AlertRule.objects.exists()
        settings.HUB_ALERT_WEBHOOK_ALLOW = ["127.0.0.1/32"]
        assert rule_form(staff, webhook_url=receiver.url)[0] == 302
        assert rule_form(operator)[0] == 302  # no URL: HUB_ALERT_WEBHOOK_URL

    await sync_to_async(through_the_form)()

    def queued() -> int:
        rule = AlertRule.objects.get(webhook_url=receiver.url)
        event = AlertEvent.objects.create(
            rule=rule, device_id=device.id, type="fired", at=django_now(), severity="info"
        )
        payload = {"id": event.id, "type": "fired"}
        return WebhookDelivery.objects.create(event=event, url=rule.webhook_url, payload=payload,
                                              next_attempt_at=django_now()).id  # fmt: skip

    settings.HUB_ALERT_WEBHOOK_ALLOW = []  # as if the name now led inside, or the rule predated the check
    refused = await sync_to_async(queued)()
    async with httpx.AsyncClient(timeout=5) as client:
        await webhooks_deliver_due(client)
        settings.HUB_ALERT_WEBHOOK_ALLOW = ["127.0.0.1"]
        sent = await sync_to_async(queued)()
        await webhooks_deliver_due(client)
    rows = await sync_to_async(lambda: dict(WebhookDelivery.objects.values_list("id", "status")))()
    error = await sync_to_async(lambda: WebhookDelivery.objects.get(id=refused).last_error)()
    assert rows == {refused: "failed", sent: "sent"} and error.startswith("refused: "), (rows, error)
    assert len(receiver.received) == 1 and receiver.received[0][0]["Host"] == receiver.url.split("/")[2]
    receiver.close()


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
            for path in (f"/ws/v1/devices/{device.key}/stream", "/ws/v1/fleet/stream"):
                try:
                    async with websockets.connect(f"{live_hub.ws}{path}", additional_headers=headers) as ws:
                        assert orjson.loads(await ws.recv())["type"] == "subscribed"
                        outcome[origin] = 101
                except websockets.InvalidStatus as exc:
                    outcome[origin] = exc.response.status_code
    assert outcome == {origin: 101 for origin in allowed} | {origin: 403 for origin in refused}, outcome
    await seen.unharmed()


async def test_numbers_at_the_edges_get_400s_finite_aggregates_and_no_silent_csv(
    live_hub, make_device, operator_cookie, monkeypatch
):
    """Finding 10: history and stream parameters out of range are refused naming the parameter (400, 4400);
    aggregates whose sums or averages leave a double's range (readings at ±1e300, or 1e308s stored before that
    limit) answer finite numbers or null, in JSON and CSV alike; a CSV export that fails midway is cut off
    (the client sees an incomplete body), never a 200 that merely ends early."""
    from core.registry import current_runtime
    from devices.services import DeviceIdentity
    from ingest.parsing import Reading as R

    device, ws_good, http_good = [await sync_to_async(make_device)() for _ in range(3)]
    day = 86_400_000
    t0 = (now_ms() // day - 2) * day  # midnight, two days ago
    legacy = [R(t0, "big", 1e308), R(t0 + 3_600_000, "big", 1e308), R(t0, "wide", 1e300), R(t0 + 1, "wide", -1e300)]
    await (await current_runtime().writer.submit(DeviceIdentity(device.id, device.key), legacy))
    api = f"/api/v1/devices/{device.key}/telemetry"
    span = f"start={t0}&end={t0 + day}"
    async with (
        bystanders(live_hub, (ws_good.key, ws_good.token), (http_good.key, http_good.token)) as seen,
        httpx.AsyncClient(base_url=live_hub.http, headers={"Cookie": operator_cookie}) as web,
    ):
        huge = 10**20
        for query, parameter in ((f"start={huge}&end=5", "start"), (f"{span}&agg=SUM&interval={huge}", "interval"),
                                 (f"start=0&end={10**15}", "end"), (f"{span}&limit=-1", "limit")):  # fmt: skip
            answer = await web.get(f"{api}?{query}")
            assert answer.status_code == 400 and answer.json()["error"]["parameter"] == parameter, answer.text
        sums = await web.get(f"{api}?{span}&keys=big&agg=SUM&interval={day}")
        assert sums.status_code == 200 and sums.json()["data"]["big"] == [{"ts": t0, "value": None}], sums.text
        average = await web.get(f"{api}?start={t0}&end={t0 + 60_000}&keys=wide&agg=AVG&interval=1500&band=1")
        assert average.json()["data"]["wide"] == [{"ts": t0, "value": 0.0, "min": -1e300, "max": 1e300}]
        csv = await web.get(f"{api}.csv?{span}&keys=big&agg=SUM&interval={day}")
        assert csv.status_code == 200 and csv.text.splitlines()[1].endswith(",big,"), csv.text

        async def failing(self, query, key):
            yield b"1,1970-01-01T00:00:00.001Z,big,1.0\n"
            raise RuntimeError("the database went away midway")

        monkeypatch.setattr("core.db.Postgres.csv_raw", failing)
        with pytest.raises(httpx.RemoteProtocolError):
            await web.get(f"{api}.csv?{span}&keys=big")
    headers = {"Cookie": operator_cookie, "Origin": live_hub.http}
    for since in ("1e308", "-5", '"x"'):
        async with websockets.connect(
            f"{live_hub.ws}/ws/v1/devices/{device.key}/stream", additional_headers=headers
        ) as ws:
            assert orjson.loads(await ws.recv())["type"] == "subscribed"
            await ws.send(f'{{"since": {since}}}')
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4400
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
