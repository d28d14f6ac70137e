"""No input gets a 5xx from the operator API (issue 22): requests generated from its own OpenAPI schema (Schemathesis,
the schema's own client of record), every operation, valid and invalid values alike, sent over HTTP as a script
with a read-write token would. Seeded (`derandomize`) and bounded (examples per operation) so CI runs the same
examples every time and in bounded time. The hub is a subprocess on the test database (the schema's client is
synchronous); what the examples create is flushed afterwards."""

import os

import pytest
import schemathesis
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from api.credentials import api_token_create
from devices.services import device_create
from testkit.process import HubProcess
from tests.conftest import database_url_for_tests, person

SCHEMA = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
EXAMPLES = 25  # per operation: 27 operations, about 700 requests


@pytest.fixture(scope="module")
def fuzzed_hub(django_db_setup, django_db_blocker, tmp_path_factory):
    """A hub subprocess on the test database with an operator's read-write token and one device; flushed after."""
    with django_db_blocker.unblock():
        user = person("fuzz", password="fuzz", role=3)
        token = api_token_create(user=user, name="fuzz", scope="write")
        device_create(key="fuzz-1")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "DJANGO_"))}
        env |= {"HUB_VAR_DIR": str(tmp_path_factory.mktemp("fuzz")), "HUB_SECRET_KEY": "f" * 50}
        env |= {"HUB_DATABASE_URL": database_url_for_tests(), "HUB_PROVISION_RATE_LIMIT": "1000"}
    hub = HubProcess(env).start()
    try:
        hub.wait_ready()
        yield hub, token
    finally:
        hub.stop()
        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)


@pytest.mark.serial
@pytest.mark.usefixtures("postgres")
@pytest.mark.django_db  # the test database exists (the hub subprocess's); the test itself writes nothing
@SCHEMA.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
def test_no_generated_request_gets_a_server_error(case, fuzzed_hub):
    hub, token = fuzzed_hub
    response = case.call(base_url=hub.http, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if response.status_code >= 500:
        traceback = hub.log.read_text().rsplit("Traceback", 1)[-1][-3000:]
        pytest.fail(f"{response.status_code} for {case.as_curl_command()}\nthe hub logged: Traceback{traceback}")
