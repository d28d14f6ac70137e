"""`timescale_convert`: turn a plain-PostgreSQL hub database into a TimescaleDB one, in place."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from storage.timescale import (
    CAGGS,
    TimescaleUnavailable,
    hypertable_create,
    reading_is_hypertable,
    timescale_configure,
    timescale_enable,
)


class Command(BaseCommand):
    help = (
        "Convert the readings table to a TimescaleDB hypertable (migrate_data), replace the rollup tables with "
        "continuous aggregates back-filled from the readings, and enable compression (HUB_COMPRESS_AFTER). "
        "Stop the hub processes first: the table is locked while its rows move into chunks."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("TimescaleDB needs PostgreSQL (HUB_DATABASE_URL=postgresql://...)")
        with connection.cursor() as cursor:
            if reading_is_hypertable(cursor):
                self.stdout.write("ingest_reading is already a hypertable; nothing to convert")
                return
            try:
                timescale_enable(cursor, mode="on")
            except TimescaleUnavailable as exc:
                raise CommandError(str(exc).replace("HUB_TIMESCALE=on, but ", "")) from None
            self.stdout.write("converting ingest_reading to a hypertable (rows move into chunks)…")
            hypertable_create(cursor)
            for name in CAGGS:  # the writer's rollup tables: the aggregates replace them, from the readings
                cursor.execute(f"DROP TABLE IF EXISTS {name}")
            for statement in CAGGS.values():
                cursor.execute(statement)
            for name in CAGGS:  # autocommit: a refresh cannot run inside a transaction
                self.stdout.write(f"back-filling {name}…")
                cursor.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", [name])
            timescale_configure(cursor)
        self.stdout.write(
            "converted: ingest_reading is a hypertable, rollups are continuous aggregates, compression is on. "
            "Restart the hub processes (set HUB_TIMESCALE=on to make them refuse a database without it)."
        )
