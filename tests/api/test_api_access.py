"""API tokens through the API and the commands: scoped, revocable, stored hashed, shown once, never logged;
device self-provisioning: one token per key, wrong secrets told apart from nothing, attempts rate-limited."""

import hashlib
import io
import logging
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.utils import timezone

from api.models import ApiToken
from core.epoch import epoch_ms
from devices.models import Device, ProvisioningProfile
from devices.services import device_authenticate
from tests.api.conftest import error, token_client
from tests.conftest import person, served_hub

pytestmark = pytest.mark.usefixtures("postgres")


async def test_an_operator_issues_lists_and_revokes_tokens(browser, runtime, caplog):
    """A token is shown once, stored as its hash, scoped, listed without its secret, and stops at revocation."""
    caplog.set_level(logging.DEBUG)
    csrf = {"X-CSRFToken": browser.csrf}
    issued = await browser.post("/api/v1/tokens", json={"name": "grafana", "scope": "read"}, headers=csrf)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    secret = body.pop("token")
    assert body["scope"] == "read" and body["name"] == "grafana" and body["revoked"] is None
    stored = await ApiToken.objects.aget(id=body["id"])
    assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    listed = (await browser.get("/api/v1/tokens")).json()
    assert [t["id"] for t in listed] == [body["id"]] and secret not in str(listed)

    async with token_client(runtime, secret) as script:
        assert (await script.get("/api/v1/devices")).status_code == 200
        assert error(await script.post("/api/v1/devices", json={"key": "x"}), 403)["code"] == "insufficient_scope"
        assert error(await script.post("/api/v1/tokens", json={"scope": "write"}), 403)["code"] == "insufficient_scope"
        assert (await browser.delete(f"/api/v1/tokens/{body['id']}", headers=csrf)).status_code == 204
        assert error(await script.get("/api/v1/devices"), 401)["code"] == "unauthorized"
        assert (await script.get("/api/v1/devices/x/latest")).status_code == 401, "the history API too"
    assert error(await browser.delete(f"/api/v1/tokens/{body['id']}", headers=csrf), 404)["code"] == "unknown_token"
    assert error(await browser.post("/api/v1/tokens", json={"scope": "admin"}, headers=csrf), 400)["field"] == "scope"
    assert secret not in caplog.text, "never logged"


async def test_a_token_of_another_operator_cannot_be_revoked(writer, transactional_db):

    from api.credentials import api_token_issue

    other = await sync_to_async(person)("other", password="pw")
    token, _ = await sync_to_async(api_token_issue)(user=other, scope="write")
    assert error(await writer.delete(f"/api/v1/tokens/{token.id}"), 404)["code"] == "unknown_token"
    assert (await ApiToken.objects.aget(id=token.id)).revoked_at is None


def test_createapitoken_scopes_and_revokeapitoken(operator_user):
    out, err = io.StringIO(), io.StringIO()
    call_command("createapitoken", "ops", "--scope", "write", "--name", "ci", stdout=out, stderr=err)
    secret = out.getvalue().strip().splitlines()[-1]
    token = ApiToken.objects.get(token_hash=hashlib.sha256(secret.encode()).hexdigest())
    assert token.scope == "write" and f"API token {token.id}" in err.getvalue() and secret not in err.getvalue()
    call_command("createapitoken", "ops", stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiToken.objects.exclude(id=token.id).get().scope == "read", "read-only unless asked"
    call_command("revokeapitoken", str(token.id), stderr=io.StringIO())
    assert ApiToken.objects.get(id=token.id).revoked_at is not None
    with pytest.raises(CommandError, match="no live API token"):
        call_command("revokeapitoken", str(token.id))


PROFILE = {"key": "field-sensors", "key_pattern": "th-*", "labels": {"site": "north"}, "max_devices": 2}


async def profile(writer, **changes) -> str:
    created = await writer.post("/api/v1/provisioning-profiles", json={**PROFILE, **changes})
    assert created.status_code == 201, created.text
    return created.json()["secret"]


async def test_a_device_provisions_itself_once(writer, anonymous):
    secret = await profile(writer)
    stored = await ProvisioningProfile.objects.aget(key="field-sensors")
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    ask = {"profile": "field-sensors", "secret": secret, "device": "th-1", "name": "Roof"}
    provisioned = await anonymous.post("/api/v1/provision", json=ask)
    assert provisioned.status_code == 201, provisioned.text
    token = provisioned.json()["token"]
    assert (await device_authenticate(token=token)).key == "th-1"
    device = await Device.objects.aget(key="th-1")
    assert (device.name, device.labels) == ("Roof", {"site": "north"}), "the profile's labels"

    again = error(await anonymous.post("/api/v1/provision", json=ask), 409)
    assert again["field"] == "device" and token not in str(again)
    assert (await device_authenticate(token=token)).key == "th-1", "the first token still works"
    outside = error(await anonymous.post("/api/v1/provision", json={**ask, "device": "pump-1"}), 403)
    assert outside["code"] == "key_not_allowed"
    assert error(await anonymous.post("/api/v1/provision", json={**ask, "device": "th 2"}), 400)["field"] == "device"
    assert (await anonymous.post("/api/v1/provision", json={**ask, "device": "th-2"})).status_code == 201
    used_up = error(await anonymous.post("/api/v1/provision", json={**ask, "device": "th-3"}), 403)
    assert used_up["code"] == "profile_exhausted"
    assert (await writer.get("/api/v1/provisioning-profiles/field-sensors")).json()["provisioned"] == 2
    assert error(await anonymous.post("/api/v1/provision", json={"profile": "field-sensors"}), 400)["field"] == "secret"


async def test_a_wrong_secret_and_an_unknown_profile_get_the_same_answer(writer, anonymous):
    await profile(writer)
    wrong = await anonymous.post(
        "/api/v1/provision", json={"profile": "field-sensors", "secret": "x", "device": "th-1"}
    )
    unknown = await anonymous.post("/api/v1/provision", json={"profile": "nope", "secret": "x", "device": "th-1"})
    assert (
        error(wrong, 401)
        == error(unknown, 401)
        == {
            "code": "provisioning_refused",
            "message": "unknown profile or wrong secret",
        }
    )
    assert wrong.headers.keys() - {"date"} == unknown.headers.keys() - {"date"}
    assert await Device.objects.acount() == 0


async def test_an_expired_profile_is_refused(writer, anonymous):
    expired = epoch_ms(timezone.now() - timedelta(minutes=1))
    secret = await profile(writer, expires=expired)
    ask = {"profile": "field-sensors", "secret": secret, "device": "th-1"}
    assert error(await anonymous.post("/api/v1/provision", json=ask), 403)["code"] == "profile_expired"


async def test_profiles_are_listed_got_deleted_and_refused(writer, reader, anonymous):
    secret = await profile(writer)
    listed = (await reader.get("/api/v1/provisioning-profiles")).json()
    assert [p["key"] for p in listed] == ["field-sensors"] and secret not in str(listed)
    assert error(await writer.post("/api/v1/provisioning-profiles", json=PROFILE), 409)["field"] == "key"
    for bad, field in (({"key": "a b"}, "key"), ({"labels": {"a": ""}}, "labels"), ({"max_devices": 0}, "max_devices")):
        assert error(await writer.post("/api/v1/provisioning-profiles", json={**PROFILE, **bad}), 400)["field"] == field
    assert error(await reader.post("/api/v1/provisioning-profiles", json={**PROFILE, "key": "x"}), 403)
    assert error(await anonymous.get("/api/v1/provisioning-profiles"), 401)
    assert (await writer.delete("/api/v1/provisioning-profiles/field-sensors")).status_code == 204
    assert error(await writer.get("/api/v1/provisioning-profiles/field-sensors"), 404)["code"] == "unknown_profile"
    gone = await anonymous.post(
        "/api/v1/provision", json={"profile": "field-sensors", "secret": secret, "device": "th-9"}
    )
    assert error(gone, 401)["code"] == "provisioning_refused"


async def test_provisioning_attempts_are_rate_limited_per_client(settings, transactional_db):
    settings.HUB_PROVISION_RATE_LIMIT, settings.HUB_PROVISION_RATE_BURST = 0.01, 5
    async with served_hub() as hub, httpx.AsyncClient(base_url=hub.http) as client:
        ask = {"profile": "nope", "secret": "guess", "device": "th-1"}
        answers = [(await client.post("/api/v1/provision", json=ask)).status_code for _ in range(7)]
        assert answers == [401] * 5 + [429] * 2
        limited = await client.post("/api/v1/provision", json=ask)
        assert error(limited, 429)["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
