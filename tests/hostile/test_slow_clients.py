"""Clients that hold connections open: dead peers, half-sent requests, slow bodies, bodies over their limit."""

import asyncio
import contextlib
import select
import socket
import time

import httpx
import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from api.credentials import api_token_create
from core.epoch import from_epoch_ms, now_ms
from storage.models import LatestValue
from storage.postgres import postgres_conninfo
from tests import rawws
from tests.conftest import person, served_hub
from tests.hostile.common import hub_address
from tests.ledger import bystanders
from tests.waiting import eventually

pytestmark = [pytest.mark.serial, pytest.mark.usefixtures("postgres")]


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


def bulk_readings(device_id: int, key: str, count: int, t0: int) -> None:
    """`count` readings of one key straight into the table (COPY): data for exports, not a test of the writer."""
    conninfo = postgres_conninfo(connection.settings_dict)
    with (
        psycopg.connect(conninfo) as conn,
        conn.cursor().copy("COPY ingest_reading (device_id, key, ts, value) FROM STDIN") as copy,
    ):
        for i in range(count):
            copy.write_row((device_id, key, from_epoch_ms(t0 + i), float(i)))
    LatestValue.objects.create(device_id=device_id, key=key, ts=from_epoch_ms(t0 + count - 1), value=float(count - 1))


def idle_in_transaction() -> int:
    """Sessions of the test database left idle inside a transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%%'"
        )
        return len(cursor.fetchall())


@pytest.mark.hub_settings(HUB_HTTP_SEND_TIMEOUT_SECONDS=4.0, HUB_READS_PER_PROCESS=5, HUB_READS_PER_CLIENT=4)
async def test_exports_whose_clients_never_read_pin_nothing(live_hub, make_device, operator_user):
    """Issue 22, finding 2: four CSV exports whose clients open a 4 KiB receive window and never read hold no
    database connection, cursor or transaction while they wait, so another client's small export answers within
    2 s; after HUB_HTTP_SEND_TIMEOUT_SECONDS without reading they are disconnected and their read slots given back."""
    made = await sync_to_async(make_device)()
    t0 = now_ms() - 86_400_000
    await sync_to_async(bulk_readings)(made.id, "big", 300_000, t0)  # ~17 MB of CSV: far more than any buffer
    await sync_to_async(bulk_readings)(made.id, "small", 10, t0)
    token = await sync_to_async(api_token_create)(user=operator_user, name="slow", scope="read")
    host, port = hub_address(live_hub)
    request = (
        f"GET /api/v1/devices/{made.key}/telemetry.csv?keys=big&start={t0}&end={t0 + 86_400_000} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    silent = []
    for _ in range(4):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, port))
        sock.sendall(request)
        silent.append(sock)  # and never read
    admission = live_hub.runtime.history.admission
    await eventually(lambda: admission.in_flight == 4, what="the four exports to be under way")
    other = await sync_to_async(person)("other", password="pw")
    another = await sync_to_async(api_token_create)(user=other, name="small", scope="read")
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=live_hub.http, headers={"Authorization": f"Bearer {another}"}) as client:
        small = await client.get(f"/api/v1/devices/{made.key}/telemetry.csv", params={"keys": "small", "start": t0})
    took = time.monotonic() - started
    print(f"a small export beside four stalled ones: {took * 1000:.0f} ms")
    assert small.status_code == 200 and len(small.text.splitlines()) == 11 and took < 2.0, (small.status_code, took)

    async def stalled_holding_nothing() -> bool:  # a page on its way is in a transaction for a moment; no more
        return admission.in_flight == 4 and await sync_to_async(idle_in_transaction)() == 0

    await eventually(stalled_holding_nothing, timeout=3, what="the stalled exports to hold no transaction")
    await eventually(lambda: admission.in_flight == 0, timeout=15, what="the stalled exports to be cut off")
    for sock in silent:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while sock.recv(1 << 20):
                pass  # what the kernel took before the hub gave up; then the end: the hub closed it
        sock.close()
    assert await sync_to_async(idle_in_transaction)() == 0
