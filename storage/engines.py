"""Which engine serves the default database: the one place that asks (as uvicorn's `auto` picks a protocol)."""

from django.db import connections

from storage.engine import Engine
from storage.postgres import Postgres
from storage.sqlite import SQLITE
from storage.timescale import Timescale

POSTGRES = Postgres(extension=Timescale())


def engine(alias: str = "default") -> Engine:
    """The engine of a database (the default one: this process's), from Django's connection."""
    vendor = connections[alias].vendor
    if vendor == "postgresql":
        return POSTGRES
    if vendor == "sqlite":
        return SQLITE
    raise RuntimeError(f"unsupported database vendor {vendor!r}: use PostgreSQL or SQLite")
