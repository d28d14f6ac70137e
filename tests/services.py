"""Which real services the suite can reach. Under HUB_REQUIRE_SERVICES=1 a missing one fails the tests."""

import os
import socket
from functools import cache
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get("HUB_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/hub")
REDIS_URL = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
MQTT_URL = os.environ.get("HUB_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
# The second storage engine (tests/engines.py): a server with TimescaleDB preloaded (`make timescaledb`).
TIMESCALE_URL = os.environ.get("HUB_TEST_TIMESCALE_URL", "postgresql://root@127.0.0.1:5433/postgres")
REQUIRED = os.environ.get("HUB_REQUIRE_SERVICES", "") not in ("", "0")


@cache
def reachable(url: str) -> bool:
    parts = urlsplit(url)
    default_port = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "mqtt": 1883}[parts.scheme]
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def need(name: str, url: str) -> None:
    """Skip (or, under HUB_REQUIRE_SERVICES=1, fail) the calling test when the service is unreachable."""
    if reachable(url):
        return
    message = f"{name} is not reachable at {url}"
    if REQUIRED:
        pytest.fail(f"{message} and HUB_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{message} (set HUB_REQUIRE_SERVICES=1 to fail instead)")
