"""Bad and absurd device input, through the real server: refused with a clear error or close code, nothing of it
stored, no other device hurt, no 500; numbers at the edges answer finite aggregates."""

import asyncio
import logging
import re

import httpx
import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from clients.device import DeviceClient
from clients.viewer import ViewerClient
from core.epoch import now_ms
from ingest.parsing import MAX_MAGNITUDE
from tests import rawws
from tests.hostile.common import hub_address, still_serving, stored
from tests.ledger import bystanders

pytestmark = pytest.mark.usefixtures("postgres")


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


_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_key = st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True)
_value = st.one_of(st.floats(-MAX_MAGNITUDE, MAX_MAGNITUDE), st.booleans(), st.integers(-(2**53), 2**53))
_valid = st.dictionaries(_key, _value, min_size=1, max_size=5)
_invalid = st.one_of(
    st.text(max_size=50).filter(lambda s: not s.strip().startswith(("{", "["))),
    st.dictionaries(st.text(min_size=1, max_size=3).filter(lambda k: not _KEY.fullmatch(k)), _value, min_size=1),
    st.dictionaries(_key, st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2), min_size=1),
)


@pytest.mark.serial
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


async def test_numbers_at_the_edges_get_400s_finite_aggregates_and_no_silent_csv(
    live_hub, make_device, operator_cookie, monkeypatch
):
    """Finding 10: history and stream parameters out of range are refused naming the parameter (400, 4400);
    aggregates whose sums or averages leave a double's range (readings at ±1e300, or 1e308s stored before that
    limit) answer finite numbers or null, in JSON and CSV alike; a CSV export that fails midway is cut off
    (the client sees an incomplete body), never a 200 that merely ends early."""
    from devices.services import DeviceIdentity
    from ingest.parsing import Reading as R

    device, ws_good, http_good = [await sync_to_async(make_device)() for _ in range(3)]
    day = 86_400_000
    t0 = (now_ms() // day - 2) * day  # midnight, two days ago
    legacy = [R(t0, "big", 1e308), R(t0 + 3_600_000, "big", 1e308), R(t0, "wide", 1e300), R(t0 + 1, "wide", -1e300)]
    await (await live_hub.runtime.writer.submit(DeviceIdentity(device.id, device.key), legacy))
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

        monkeypatch.setattr("storage.postgres.PostgresReads.csv_raw", failing)
        with pytest.raises(httpx.RemoteProtocolError):
            await web.get(f"{api}.csv?{span}&keys=big")
    for since in ("1e308", "-5", '"x"'):
        async with ViewerClient.connect(live_hub.ws, cookie=operator_cookie, key=device.key) as stream:
            await stream.send(f'{{"since": {since}}}')
            assert await stream.closed() == 4400
    await seen.unharmed()
