"""Whether the hub's PostgreSQL database uses TimescaleDB (HUB_TIMESCALE=auto|on|off), decided in one place.

`auto` uses TimescaleDB when the extension is already created or can be created, and otherwise carries on as
plain PostgreSQL with one warning naming why; `on` refuses with that reason; `off` never touches it. A server
where the package is installed but not preloaded lists the extension as available while refusing to create
it: that is the usual state right after `apt-get install`, so it is checked before CREATE EXTENSION.
"""

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

MODES = ("auto", "on", "off")


class TimescaleUnavailable(ImproperlyConfigured):
    """HUB_TIMESCALE=on, and this server cannot give the database TimescaleDB (the message says why)."""


def _fetch_one(cursor, sql: str, params: list | None = None):
    cursor.execute(sql, params or [])
    return cursor.fetchone()


def timescale_missing_reason(cursor) -> str | None:
    """Why TimescaleDB cannot be used in this database, or None when the extension exists or can be created."""
    if _fetch_one(cursor, EXTENSION_CREATED):
        return None
    if not _fetch_one(cursor, "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"):
        return "the timescaledb extension is not installed on this PostgreSQL server"
    preload = _fetch_one(cursor, "SELECT current_setting('shared_preload_libraries')")[0]
    if "timescaledb" not in [name.strip() for name in preload.split(",")]:
        return "timescaledb is installed but not in shared_preload_libraries (edit postgresql.conf and restart)"
    return None


def timescale_enable(cursor, *, mode: str | None = None) -> bool:
    """Create the extension when the mode and the server allow; True when the database has it (now).

    Raises TimescaleUnavailable with the reason for `on`; warns once with the reason for `auto`.
    """
    mode = mode or settings.HUB_TIMESCALE
    if mode == "off":
        return False
    reason = timescale_missing_reason(cursor)
    if reason is None:
        try:
            cursor.execute("SAVEPOINT hub_timescale")
            cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            cursor.execute("RELEASE SAVEPOINT hub_timescale")
            return True
        except Exception as exc:  # e.g. not allowed to create extensions
            cursor.execute("ROLLBACK TO SAVEPOINT hub_timescale")
            reason = f"CREATE EXTENSION timescaledb failed: {exc}".strip()
    if mode == "on":
        raise TimescaleUnavailable(f"HUB_TIMESCALE=on, but {reason}")
    logger.warning("TimescaleDB not used (HUB_TIMESCALE=auto): %s; carrying on as plain PostgreSQL", reason)
    return False


# The probe, for Django's cursor here and the writer's async connection (ingest/backends.py): the second
# query names a view that exists only where the extension does.
EXTENSION_CREATED = "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
READING_HYPERTABLE = "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'ingest_reading'"


def reading_is_hypertable(cursor) -> bool:
    """The readings table is a TimescaleDB hypertable (its rollups are then continuous aggregates)."""
    return bool(_fetch_one(cursor, EXTENSION_CREATED) and _fetch_one(cursor, READING_HYPERTABLE))
