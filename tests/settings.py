"""Test settings: the production path (PostgreSQL + Redis) when reachable, else the embedded default.

Tests that need a service request the `postgres`/`redis`/`mqtt` fixtures, which skip or fail loudly.
"""

import os
import tempfile

from tests.services import POSTGRES_URL, REDIS_URL, REQUIRED, reachable

os.environ.setdefault("HUB_SECRET_KEY", "tests-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("HUB_VAR_DIR", tempfile.mkdtemp(prefix="hub-tests-"))
if REQUIRED or reachable(POSTGRES_URL):
    os.environ.setdefault("HUB_DATABASE_URL", POSTGRES_URL)
if REQUIRED or reachable(REDIS_URL):
    os.environ.setdefault("HUB_REDIS_URL", REDIS_URL)
# Concurrent test runs on one machine, and the workers of one run (pytest-xdist), must not share a test database,
# channel-layer names or an MQTT share group (tests/bridge_process.py reads HUB_TEST_RUN_ID).
RUN_ID = os.environ.setdefault("HUB_TEST_RUN_ID", str(os.getpid()))
if (worker := os.environ.get("PYTEST_XDIST_WORKER", "")) and not RUN_ID.endswith(worker):
    RUN_ID = os.environ["HUB_TEST_RUN_ID"] = f"{RUN_ID}{worker}"
    os.environ["HUB_CHANNEL_PREFIX"] = f"hubtest{RUN_ID}"
os.environ.setdefault("HUB_CHANNEL_PREFIX", f"hubtest{RUN_ID}")

from hub.settings import *  # noqa: E402, F403

# Unhashed passwords keep login fixtures fast.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DATABASES["default"]["TEST"] = {"NAME": f"test_hub_{RUN_ID}"}  # noqa: F405
