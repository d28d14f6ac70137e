"""The one payload parser: every accepted form, every limit, and no input that crashes it."""

import contextlib
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.parsing import MAX_MAGNITUDE, ErrorCode, IngestError, Limits, Reading, parse_telemetry

NOW = 1_795_000_000_000  # 2026-11-18, ms
LIMITS = Limits()


def parse(body: str | bytes, limits: Limits = LIMITS) -> list[Reading]:
    return parse_telemetry(body, now_ms=NOW, limits=limits)


def refused(body: str | bytes, limits: Limits = LIMITS) -> IngestError:
    with pytest.raises(IngestError) as error:
        parse(body, limits)
    return error.value


def test_flat_object_is_stamped_with_server_time():
    assert parse('{"temperature": 21.5, "humidity": 40}') == [
        Reading(NOW, "temperature", 21.5),
        Reading(NOW, "humidity", 40.0),
    ]


def test_timestamped_object_and_batches_of_both_forms():
    body = [{"ts": NOW - 5, "values": {"t": 1}}, {"h": 2}, {"ts": NOW - 1, "values": {"t": 3}}]
    assert parse(orjson.dumps(body)) == [Reading(NOW - 5, "t", 1.0), Reading(NOW, "h", 2.0), Reading(NOW - 1, "t", 3.0)]


def test_value_types():
    """Booleans are 1/0, strings are text values (numeric strings stay text), nulls are skipped."""
    readings = parse('{"on": true, "off": false, "n": 7, "s": "open", "num": "21.5", "gone": null}')
    assert readings == [
        Reading(NOW, "on", 1.0),
        Reading(NOW, "off", 0.0),
        Reading(NOW, "n", 7.0),
        Reading(NOW, "s", None, "open"),
        Reading(NOW, "num", None, "21.5"),
    ]


def test_ts_without_values_is_an_ordinary_key_as_in_thingsboard():
    assert parse('{"ts": 5, "t": 1}') == [Reading(NOW, "ts", 5.0), Reading(NOW, "t", 1.0)]


def test_empty_messages_hold_no_readings_and_bytes_equal_str():
    assert parse("{}") == parse("[]") == []
    assert parse(b'{"a": 1}') == parse('{"a": 1}')


def test_integral_float_ts_is_accepted():
    assert parse(f'{{"ts": {NOW - 1}.0, "values": {{"a": 1}}}}') == [Reading(NOW - 1, "a", 1.0)]


@pytest.mark.parametrize(
    ("body", "code", "index", "key"),
    [
        ("{", ErrorCode.MALFORMED_JSON, None, None),
        ('{"x": NaN}', ErrorCode.MALFORMED_JSON, None, None),
        ('{"x": Infinity}', ErrorCode.MALFORMED_JSON, None, None),
        ('{"x": 1e999}', ErrorCode.MALFORMED_JSON, None, None),
        (b'{"x": "\xff"}', ErrorCode.MALFORMED_JSON, None, None),
        ("[" * 100_000, ErrorCode.TOO_LARGE, None, None),
        ("[" * 2000 + "]" * 2000, ErrorCode.MALFORMED_JSON, None, None),
        ("42", ErrorCode.INVALID_SHAPE, None, None),
        ('[{"a": 1}, 5]', ErrorCode.INVALID_SHAPE, 1, None),
        ('{"ts": 1, "values": 5}', ErrorCode.INVALID_SHAPE, None, None),
        (f'{{"ts": {NOW}, "values": {{}}, "extra": 1}}', ErrorCode.INVALID_SHAPE, None, None),
        ('{"": 1}', ErrorCode.INVALID_KEY, None, ""),
        ('{"bad key": 1}', ErrorCode.INVALID_KEY, None, "bad key"),
        ('{"' + "k" * 65 + '": 1}', ErrorCode.INVALID_KEY, None, "k" * 65),
        ('[{"a": 1}, {"b": {"nested": 1}}]', ErrorCode.INVALID_VALUE, 1, "b"),
        ('{"a": [1, 2]}', ErrorCode.INVALID_VALUE, None, "a"),
        ('{"a": 9007199254740993}', ErrorCode.INVALID_VALUE, None, "a"),
        ('{"ts": "now", "values": {"a": 1}}', ErrorCode.INVALID_TS, None, None),
        ('{"ts": true, "values": {"a": 1}}', ErrorCode.INVALID_TS, None, None),
        ('{"ts": 1.5, "values": {"a": 1}}', ErrorCode.INVALID_TS, None, None),
        # What the database would refuse: NUL in text; numbers whose hourly rollup sum could overflow.
        ('[{"ok": "x"}, {"s": "a\\u0000b"}]', ErrorCode.UNSTORABLE_VALUE, 1, "s"),
        ('{"x": 1e308}', ErrorCode.VALUE_OUT_OF_RANGE, None, "x"),
        ('{"x": -1.0000000000000002e300}', ErrorCode.VALUE_OUT_OF_RANGE, None, "x"),
        ('{"x": 1' + "0" * 301 + "}", ErrorCode.VALUE_OUT_OF_RANGE, None, "x"),  # an integer literal, 1e301
    ],
)
def test_each_rule_is_named_with_its_index_and_key(body, code, index, key):
    error = refused(body)
    assert (error.code, error.index, error.key) == (code, index, key)
    assert error.message


@pytest.mark.parametrize(
    ("ts", "unit"),
    [
        (NOW // 1000, "seconds"),
        (NOW * 1000, "microseconds"),
        (NOW * 1_000_000, "nanoseconds"),
        (1_000_000_000, "seconds"),
    ],
)
def test_timestamps_in_the_wrong_unit_are_refused_naming_the_unit(ts, unit):
    error = refused(f'{{"ts": {ts}, "values": {{"a": 1}}}}')
    assert error.code == ErrorCode.TS_UNIT and unit in error.message


def test_the_time_window():
    future, past = LIMITS.max_future_ms, LIMITS.max_past_ms
    assert parse(f'{{"ts": {NOW + future}, "values": {{"a": 1}}}}')
    assert parse(f'{{"ts": {NOW - past}, "values": {{"a": 1}}}}')
    assert refused(f'{{"ts": {NOW + future + 1}, "values": {{"a": 1}}}}').code == ErrorCode.TS_IN_FUTURE
    assert refused(f'{{"ts": {NOW - past - 1}, "values": {{"a": 1}}}}').code == ErrorCode.TS_TOO_OLD
    assert refused('{"ts": 12345, "values": {"a": 1}}').code == ErrorCode.TS_TOO_OLD  # 1970, never stored


def test_size_and_count_limits_are_configurable_and_count_bytes():
    small = Limits(max_bytes=20, max_readings=2)
    assert parse('{"a": "ééé"}', small)  # 16 bytes
    assert refused('{"a": "éééééé"}', small).code == ErrorCode.TOO_LARGE  # 15 characters, 22 bytes
    assert parse('{"a":1,"b":2}', small)
    error = refused('[{"a":1},{"b":2,"c":3}]', Limits(max_readings=2))
    assert error.code == ErrorCode.TOO_MANY_READINGS and error.index == 1
    assert len(parse(orjson.dumps({f"k{i}": i for i in range(1000)}))) == 1000
    assert refused(orjson.dumps({f"k{i}": i for i in range(1001)})).code == ErrorCode.TOO_MANY_READINGS


def test_a_key_of_64_characters_is_accepted():
    assert parse('{"' + "k" * 64 + '": 1}')[0].key == "k" * 64


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_no_text_or_bytes_crash_the_parser(body):
    with contextlib.suppress(IngestError):
        parse(body)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_no_json_document_crashes_the_parser(document):
    try:
        body = orjson.dumps(document)
    except (TypeError, orjson.JSONEncodeError):
        return  # integers beyond 64 bits cannot be encoded by orjson
    try:
        readings = parse(body)
    except IngestError:
        return
    assert all(r.value is None or math.isfinite(r.value) for r in readings)


_key = st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)
_number = st.floats(min_value=-MAX_MAGNITUDE, max_value=MAX_MAGNITUDE, width=64)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_key, _number, min_size=1, max_size=20),
    st.integers(NOW - LIMITS.max_past_ms, NOW + LIMITS.max_future_ms),
)
def test_valid_messages_round_trip(values, ts):
    assert parse(orjson.dumps({"ts": ts, "values": values})) == [Reading(ts, k, v) for k, v in values.items()]
    assert parse(orjson.dumps(values)) == [Reading(NOW, k, v) for k, v in values.items()]


def test_the_largest_magnitudes_are_accepted_at_the_fast_path_boundary():
    assert parse(f'{{"a": {MAX_MAGNITUDE!r}, "b": -{MAX_MAGNITUDE!r}, "c": 1.5}}') == [
        Reading(NOW, "a", MAX_MAGNITUDE),
        Reading(NOW, "b", -MAX_MAGNITUDE),
        Reading(NOW, "c", 1.5),
    ]


@pytest.mark.parametrize("key", ["a b", "a\u00e9", "\u0661", "a\n", "k\x00", "a/b", "a+b", "\u212a", "ａ"])
def test_keys_outside_the_allowed_characters_are_refused_wherever_the_character_is(key):
    for placed in (key, f"x{key}", f"{key}x", f"x{key}x"):
        assert refused(orjson.dumps({placed: 1})).code == ErrorCode.INVALID_KEY, placed
    assert [r.key for r in parse(orjson.dumps({"Az09_.-": 1, "-": 2, ".": 3}))] == ["Az09_.-", "-", "."]
