"""The writer's arrays travel as PostgreSQL array literals built by the hub (storage/postgres.py), not by psycopg:
every value PostgreSQL reads back from them is the value the hub sent, to the last bit of a double."""

import math

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo

from storage.postgres import float_array, int_array, text_array

# Text PostgreSQL can hold (no NUL, no lone surrogate: that is no UTF-8), keys as the grammar allows them and
# anything else a caller might pass.
texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=20)
doubles = st.floats(allow_nan=False, allow_infinity=False)


@pytest.fixture
def cursor(postgres) -> psycopg.ClientCursor:
    with psycopg.connect(make_conninfo(postgres, dbname="postgres"), autocommit=True) as conn:  # reads no table
        yield psycopg.ClientCursor(conn)


def read_back(cursor: psycopg.ClientCursor, literal: str, kind: str) -> list:
    cursor.execute(f"SELECT %s::{kind}[]", [literal])
    return cursor.fetchone()[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(texts, max_size=8))
def test_text_arrays_read_back_exactly(cursor, values):
    assert read_back(cursor, text_array(values), "text") == values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), doubles), max_size=8))
def test_float_arrays_read_back_to_the_bit(cursor, values):
    got = read_back(cursor, float_array(values), "float8")
    assert [None if v is None else (v, math.copysign(1, v)) for v in got] == [
        None if v is None else (v, math.copysign(1, v)) for v in values
    ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=8))
def test_int_arrays_read_back_exactly(cursor, values):
    assert read_back(cursor, int_array(values), "bigint") == values


def test_keys_spelled_like_sql_words_stay_text(cursor):
    keys = ["NULL", "null", "a.b-c", "1", "{}"]
    assert read_back(cursor, text_array(keys), "text") == keys
