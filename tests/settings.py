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
# Concurrent test runs on one machine must not share a test database or channel-layer names.
RUN_ID = os.environ.setdefault("HUB_TEST_RUN_ID", str(os.getpid()))
os.environ.setdefault("HUB_CHANNEL_PREFIX", f"hubtest{RUN_ID}")

from hub.settings import *  # noqa: E402, F403

# Unhashed passwords keep login fixtures fast.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DATABASES["default"]["TEST"] = {"NAME": f"test_hub_{RUN_ID}"}  # noqa: F405
