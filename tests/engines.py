"""Storage tests on both engines: plain PostgreSQL and TimescaleDB.

Django's test database lives on the PostgreSQL server of HUB_TEST_DATABASE_URL (5432); a second one, migrated
the same way (so the readings table becomes a hypertable with continuous aggregates), lives on the
TimescaleDB server of HUB_TEST_TIMESCALE_URL (5433, `make timescaledb`). A test module marked `engines` runs
each of its tests once per engine: the `engine` fixture points Django's default connection, in every thread,
at that engine's database for the test, and hub processes the test starts follow it
(`database_url_for_tests`). A parametrised fixture, not a copy of the tests.
"""

import contextlib
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from asgiref.sync import SyncToAsync
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import connection, connections

from accounts.users import roles_ensure
from storage.postgres import postgres_conninfo
from storage.timescale import CAGGS, reading_is_hypertable
from tests.services import TIMESCALE_URL, need

ENGINES = ("postgres", "timescale")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines: run each test on plain PostgreSQL and on TimescaleDB")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("engines"):
        metafunc.parametrize("engine", ENGINES, indirect=True)


def _close_default_connections() -> None:
    """Every thread's connection to the default database, then its pool: the next query reconnects."""
    SyncToAsync.single_thread_executor.submit(connections.close_all).result()
    connections.close_all()
    default = connections["default"]
    if getattr(default, "pool", None) is not None:
        default.close_pool()


@contextlib.contextmanager
def default_database(overrides: dict[str, object]) -> Iterator[None]:
    """Point the default database's settings (the one dict every thread's connection reads) elsewhere."""
    live = connections.settings["default"]
    saved = {key: live.get(key) for key in overrides}
    _close_default_connections()
    live.update(overrides)
    try:
        yield
    finally:
        _close_default_connections()
        live.update(saved)


@pytest.fixture(scope="session")
def timescale_database(django_db_setup, django_db_blocker) -> Iterator[dict[str, object]]:
    """The test database a second time, on the TimescaleDB server, migrated (readings in a hypertable)."""
    need("TimescaleDB", TIMESCALE_URL)
    parts = urlsplit(TIMESCALE_URL)
    name = f"{connection.settings_dict['NAME']}_timescale"
    with psycopg.connect(TIMESCALE_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    overrides = {
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": parts.port or 5432,
        "USER": parts.username or os.environ.get("USER", "postgres"),
        "PASSWORD": parts.password or "",
        "NAME": name,
    }
    with django_db_blocker.unblock(), default_database(overrides):
        call_command("migrate", verbosity=0, interactive=False)
        with connection.cursor() as cursor:
            assert reading_is_hypertable(cursor), f"{TIMESCALE_URL} did not give the test database TimescaleDB"
            # The refresh and compression jobs would run whenever TimescaleDB's scheduler decides, moving
            # the aggregates' watermark under tests that assert on them: tests run the jobs' work themselves.
            cursor.execute(
                "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
                " WHERE hypertable_name IS NOT NULL"
            )
    yield overrides
    with psycopg.connect(TIMESCALE_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def engine(request: pytest.FixtureRequest, django_db_blocker) -> Iterator[str]:
    """The storage engine of this test: "postgres" (the default) or "timescale" (tests marked `engines`)."""
    name = getattr(request, "param", "postgres")
    if name == "postgres":
        yield name
        return
    overrides = request.getfixturevalue("timescale_database")
    with default_database(overrides):
        try:
            yield name
        finally:
            with django_db_blocker.unblock():
                _emptied()


def _emptied() -> None:
    """Empty the TimescaleDB test database as pytest-django empties its own after each test: every table,
    sequences kept (ids never repeat, as rollups outlive devices), and the continuous aggregates refreshed
    over the now empty readings (a flush does not reach what they materialised)."""
    with connection.cursor() as cursor:
        tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
        for statement in connection.ops.sql_flush(no_style(), tables, reset_sequences=False, allow_cascade=True):
            cursor.execute(statement)
    roles_ensure()  # as Django's own flush does through post_migrate: the role groups and their permissions
    refresh_aggregates()


def refresh_aggregates() -> None:
    """Where the rollups are continuous aggregates, run what their refresh policy runs within a minute (an
    hour's rollups: within 30): TimescaleDB shows a reading older than the aggregate's watermark (a late one,
    or any in these tests, which write the past) only after that refresh. No-op on plain PostgreSQL."""
    with psycopg.connect(postgres_conninfo(connection.settings_dict), autocommit=True) as conn:
        cursor = conn.cursor()
        if not reading_is_hypertable(cursor):
            return
        for name in CAGGS:
            cursor.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", [name])
