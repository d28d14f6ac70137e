"""Issue 22, finding 1: every history answer is bounded as a whole, not per key. What a query asks beyond the bound
comes in pages whose cursors give exactly the rest (raw) or whole keys (aggregates); a live window is decimated; a
CSV export stops at its rows across keys and says so; heavy reads are admitted per client and per process (429), and
a read's statement stops at its timeout (503). On both storage engines, in-process."""

import pytest
from asgiref.sync import sync_to_async

from api.credentials import api_token_create
from api.models import ApiToken
from core.epoch import now_ms
from ingest.parsing import Reading as R
from tests.inprocess import in_process_client
from tests.test_history import HOUR, hour_floor, store

pytestmark = [pytest.mark.usefixtures("postgres"), pytest.mark.engines]

KEYS = [f"k{i:02d}" for i in range(12)]
POINTS = 90  # per key


@pytest.fixture
async def many_keys(runtime, make_device):
    """A device with 12 keys of 90 readings each, a second apart, in the last hours."""
    made = await sync_to_async(make_device)()
    t0 = hour_floor(now_ms()) - 3 * HOUR
    await store(runtime.writer, made, [R(t0 + i * 1000, key, float(i)) for key in KEYS for i in range(POINTS)])
    return made, t0


async def pages(client, url: str, params: dict) -> list[dict]:
    """Every page of an answer, following `next`."""
    answers, cursor = [], None
    while True:
        answer = await client.get(url, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
        cursor = answers[-1]["next"]
        if cursor is None:
            return answers


@pytest.mark.hub_settings(HUB_HISTORY_MAX_POINTS=200, HUB_READS_LIGHT_POINTS=0)
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_raw_answers_come_in_pages_that_give_exactly_the_rest(runtime, many_keys, operator_cookie, order):
    """12 keys x 90 points with a limit of 80 per key: 960 points in pages of at most 200; following `next`
    gives every one of them once, in order, each key's within its limit."""
    made, t0 = many_keys
    url = f"/api/v1/devices/{made.key}/telemetry"
    params = {"keys": ",".join(KEYS), "start": t0, "end": t0 + HOUR, "limit": 80, "order": order}
    async with in_process_client(runtime, cookie=operator_cookie) as client:
        answers = await pages(client, url, params)
    sizes = [sum(len(points) for points in a["data"].values()) for a in answers]
    assert all(size <= 200 for size in sizes) and sum(sizes) == 12 * 80, sizes
    merged: dict[str, list[int]] = {}
    for answer in answers:
        for key, points in answer["data"].items():
            merged.setdefault(key, []).extend(p["ts"] for p in points)
    expected = [t0 + i * 1000 for i in range(80)] if order == "asc" else [t0 + i * 1000 for i in range(89, 9, -1)]
    assert merged == {key: expected for key in KEYS}


@pytest.mark.hub_settings(HUB_HISTORY_MAX_POINTS=200, HUB_READS_LIGHT_POINTS=0)
async def test_aggregates_come_in_pages_of_whole_keys(runtime, many_keys, operator_cookie):
    made, t0 = many_keys
    url = f"/api/v1/devices/{made.key}/telemetry"
    params = {"keys": ",".join(KEYS), "start": t0, "end": t0 + 60_000 * 2, "agg": "AVG", "interval": 1000}
    async with in_process_client(runtime, cookie=operator_cookie) as client:
        answers = await pages(client, url, params)
    assert len(answers) > 1 and all(len(a["data"]) <= 200 // 120 + 1 for a in answers)
    keys = [key for answer in answers for key in answer["data"]]
    assert keys == KEYS, "every key once, whole, in order"
    assert all(len(points) == POINTS for answer in answers for points in answer["data"].values())


@pytest.mark.hub_settings(HUB_HISTORY_MAX_POINTS=400)
async def test_a_window_of_many_keys_is_decimated_to_the_bound(runtime, many_keys, operator_cookie):
    made, t0 = many_keys
    params = {"keys": ",".join(KEYS), "start": t0, "end": t0 + HOUR, "px": 1000}
    async with in_process_client(runtime, cookie=operator_cookie) as client:
        answer = (await client.get(f"/api/v1/devices/{made.key}/window", params=params)).json()
    points = sum(len(s["raw"]) + 2 * len(s["buckets"]) for s in answer["series"].values())
    assert list(answer["series"]) == KEYS and points <= 400, points
    assert answer["px"] < 1000 and answer["tail"] < 2000, (answer["px"], answer["tail"])


@pytest.mark.hub_settings(HUB_HISTORY_CSV_MAX_ROWS=600)
async def test_a_csv_export_stops_at_its_rows_across_keys_and_says_so(runtime, many_keys, operator_cookie):
    made, t0 = many_keys
    params = {"keys": ",".join(KEYS), "start": t0, "end": t0 + HOUR}
    async with in_process_client(runtime, cookie=operator_cookie) as client:
        answer = await client.get(f"/api/v1/devices/{made.key}/telemetry.csv", params=params)
    assert answer.status_code == 200 and answer.headers["X-Hub-Rows-Per-Key"] == "50"
    assert len(answer.text.splitlines()) == 1 + 12 * 50


@pytest.mark.hub_settings(HUB_READS_PER_CLIENT=1, HUB_READS_PER_PROCESS=2, HUB_READS_LIGHT_POINTS=0)
async def test_heavy_reads_are_admitted_per_client_and_per_process(runtime, many_keys, operator_user):
    """With one heavy read per client and two in all: a client's second is 429 with Retry-After while its first is
    under way; two reads fill the process, and a third client is 429 too; a slot given back admits the next."""
    made, t0 = many_keys
    url = f"/api/v1/devices/{made.key}/telemetry"
    params = {"keys": "k01", "start": t0, "end": t0 + HOUR}
    tokens = [await sync_to_async(api_token_create)(user=operator_user, name=f"t{i}") for i in range(2)]
    first_id = await sync_to_async(ApiToken.objects.values_list("id", flat=True).get)(name="t0")
    admission = runtime.history.admission
    async with in_process_client(runtime) as first, in_process_client(runtime) as second:
        first.headers["Authorization"] = f"Bearer {tokens[0]}"
        second.headers["Authorization"] = f"Bearer {tokens[1]}"
        under_way = admission.admit(("token", first_id))  # the first client's export, say
        refused = await first.get(url, params=params)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "3", refused.text
        assert refused.json()["error"]["code"] == "too_many_reads"
        assert "you have 1 heavy reads in flight" in refused.json()["error"]["message"]
        assert (await second.get(url, params=params)).status_code == 200, "another client has its own slot"
        other = admission.admit(("token-of", "another client"))  # the process's two slots taken
        refused = await second.get(url, params=params)
        assert refused.status_code == 429 and "this hub process is serving 2" in refused.json()["error"]["message"]
        under_way.release()
        assert (await second.get(url, params=params)).status_code == 200, "a slot given back admits the next"
        other.release()
    assert admission.in_flight == 0


@pytest.mark.hub_settings(HUB_READ_TIMEOUT_SECONDS=0.2)
async def test_a_read_past_its_timeout_is_503_and_leaves_no_trace(runtime, many_keys, operator_cookie, monkeypatch):
    """A statement running past HUB_READ_TIMEOUT_SECONDS is stopped by PostgreSQL: 503 with Retry-After, and the
    next read is answered. (The slow statement is simulated with pg_sleep.)"""
    from history import answers

    made, t0 = many_keys
    real = answers.points_json

    def slow(**query):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(1)")
        return real(**query)

    url = f"/api/v1/devices/{made.key}/telemetry"
    async with in_process_client(runtime, cookie=operator_cookie) as client:
        monkeypatch.setattr(answers, "points_json", slow)
        timed_out = await client.get(url, params={"keys": "k01", "start": t0})
        monkeypatch.setattr(answers, "points_json", real)
        after = await client.get(url, params={"keys": "k01", "start": t0})
    assert timed_out.status_code == 503 and timed_out.json()["error"]["code"] == "read_timeout", timed_out.text
    assert after.status_code == 200 and len(after.json()["data"]["k01"]) == POINTS


async def test_a_cursor_of_another_answer_is_400(runtime, many_keys, operator_cookie):
    made, t0 = many_keys
    url = f"/api/v1/devices/{made.key}/telemetry"
    async with in_process_client(runtime, cookie=operator_cookie) as client:
        for cursor in ("x", "W1swLDAsMF1d", "Wzk5LG51bGwsMF0"):  # not base64 JSON; [[0,0,0]]; key index 99
            answer = await client.get(url, params={"keys": "k01", "start": t0, "cursor": cursor})
            assert answer.status_code == 400 and answer.json()["error"]["parameter"] == "cursor", answer.text
