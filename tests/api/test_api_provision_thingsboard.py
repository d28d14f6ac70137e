"""A device written for ThingsBoard's HTTP device API provisions itself unchanged (issue 24): its request on
`POST /api/v1/provision`, answered in ThingsBoard's shape and status codes (DeviceApiController.provisionDevice and
JsonConverter.toJson(ProvisionDeviceResponseMsg) of thingsboard/thingsboard): 200 with SUCCESS and the token, 200
with NOT_FOUND or FAILURE and never a token; a body the hub cannot serve, 400 FAILURE."""

import json
import logging
import time

import httpx
import pytest

from accounts.models import AuditEvent
from devices.models import Device, ProvisioningProfile
from devices.services import device_authenticate

pytestmark = pytest.mark.usefixtures("postgres")

PROFILE = {"key": "field-sensors", "key_pattern": "th-*", "labels": {"site": "north"}}
NOT_FOUND = {"status": "NOT_FOUND", "errorMsg": "Provision data was not found!"}


class TBProvisionFailure(Exception):
    """tb_device_http's exception for an answer other than SUCCESS with an access token."""


async def sdk_provision(client: httpx.AsyncClient, device_name: str, device_key: str, device_secret: str) -> str:
    """TBHTTPDevice.provision of ThingsBoard's Python SDK (thingsboard-python-client-sdk, tb_device_http.py) over
    httpx: the body `requests.post(json=...)` sends, raise_for_status, then `status` and `credentialsType` read."""
    data = {"deviceName": device_name, "provisionDeviceKey": device_key, "provisionDeviceSecret": device_secret}
    body = json.dumps(data, allow_nan=False).encode()  # requests' own encoding of json=
    response = await client.post("/api/v1/provision", content=body, headers={"Content-Type": "application/json"})
    response.raise_for_status()
    device = response.json()
    if device["status"] == "SUCCESS" and device["credentialsType"] == "ACCESS_TOKEN":
        return device["credentialsValue"]
    raise TBProvisionFailure(device)


async def profile(writer: httpx.AsyncClient) -> str:
    """The profile's secret, as an operator creates it (tests/api/test_api_access.py)."""
    created = await writer.post("/api/v1/provisioning-profiles", json=PROFILE)
    assert created.status_code == 201, created.text
    return created.json()["secret"]


def tb_request(secret: str, device: str = "th-1", **changes: object) -> dict:
    return {"deviceName": device, "provisionDeviceKey": "field-sensors", "provisionDeviceSecret": secret, **changes}


def failure(response: httpx.Response, status: int = 200) -> str:
    """ThingsBoard's FAILURE answer, without a token: its errorMsg."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body.keys() == {"status", "errorMsg"} and body["status"] == "FAILURE", body
    return body["errorMsg"]


async def test_a_thingsboard_device_provisions_itself_and_sends_telemetry(writer, anonymous, caplog):
    """The SDK's request gets a token that authenticates the device, carries the profile's labels, and posts
    telemetry as the SDK does; the act is audited as the device's and the token is in no log."""
    caplog.set_level(logging.DEBUG)
    secret = await profile(writer)
    token = await sdk_provision(anonymous, "th-1", "field-sensors", secret)
    assert (await device_authenticate(token=token)).key == "th-1"
    assert (await Device.objects.aget(key="th-1")).labels == {"site": "north"}, "the profile's labels"
    event = await AuditEvent.objects.aget(action="device.provision")
    assert (event.actor_kind, event.actor, event.object_id, event.detail) == (
        "device", "th-1", "th-1", {"profile": "field-sensors"}
    )  # fmt: skip

    # TBHTTPDevice.send_telemetry(..., queued=False): POST {host}/api/v1/{token}/telemetry, {"ts", "values"}.
    ts = int(time.time() * 1000)
    sent = await anonymous.post(f"/api/v1/{token}/telemetry", json={"ts": ts, "values": {"temperature": 21.5}})
    assert sent.status_code == 200, sent.text
    latest = (await writer.get("/api/v1/devices/th-1/latest")).json()["latest"]
    assert latest["temperature"] == {"ts": ts, "value": 21.5}
    hub_logs = [r.getMessage() for r in caplog.records if r.name != "httpx"]  # httpx: this test's own client
    assert token not in str(hub_logs)


async def test_the_answer_is_thingsboards_shape_and_status(writer, anonymous):
    """Exactly ThingsBoard's three keys with 200, not the hub's 201 {"device", "token"}."""
    secret = await profile(writer)
    answer = await anonymous.post("/api/v1/provision", json=tb_request(secret, credentialsType="ACCESS_TOKEN"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body.keys() == {"status", "credentialsType", "credentialsValue"}
    assert (body["status"], body["credentialsType"]) == ("SUCCESS", "ACCESS_TOKEN")
    assert (await device_authenticate(token=body["credentialsValue"])).key == "th-1"


async def test_a_wrong_secret_and_an_unknown_profile_get_the_same_not_found(writer, anonymous):
    """ThingsBoard's one NOT_FOUND, word for word, for an unknown profile, a wrong secret and empty ones alike."""
    await profile(writer)
    wrong = await anonymous.post("/api/v1/provision", json=tb_request("guess"))
    unknown = await anonymous.post("/api/v1/provision", json={**tb_request("guess"), "provisionDeviceKey": "nope"})
    empty = await anonymous.post("/api/v1/provision", json={**tb_request(""), "provisionDeviceKey": ""})
    assert wrong.status_code == unknown.status_code == empty.status_code == 200
    assert wrong.json() == unknown.json() == empty.json() == NOT_FOUND
    assert wrong.headers.keys() - {"date"} == unknown.headers.keys() - {"date"}
    with pytest.raises(TBProvisionFailure):
        await sdk_provision(anonymous, "th-1", "nope", "guess")
    assert await Device.objects.acount() == 0


async def test_a_device_name_provisioned_already_fails_without_a_token(writer, anonymous):
    """ThingsBoard's FAILURE for a device that exists: the first token is never handed out again."""
    secret = await profile(writer)
    token = await sdk_provision(anonymous, "th-1", "field-sensors", secret)
    again = await anonymous.post("/api/v1/provision", json=tb_request(secret))
    assert failure(again) == "deviceName: a device with the key 'th-1' exists"
    assert token not in again.text
    with pytest.raises(TBProvisionFailure) as refused:
        await sdk_provision(anonymous, "th-1", "field-sensors", secret)
    assert refused.value.args[0]["status"] == "FAILURE"
    assert (await device_authenticate(token=token)).key == "th-1", "the first token still works"
    assert (await ProvisioningProfile.objects.aget(key="field-sensors")).provisioned == 1


async def test_a_name_outside_the_pattern_or_not_a_key_fails(writer, anonymous):
    """Refusals after the secret matched are FAILURE naming why; the same names with a wrong secret: NOT_FOUND."""
    secret = await profile(writer)
    assert "pattern" in failure(await anonymous.post("/api/v1/provision", json=tb_request(secret, "pump-1")))
    assert failure(await anonymous.post("/api/v1/provision", json=tb_request(secret, "th 2"))).startswith("deviceName:")
    for name in ("pump-1", "th 2"):
        assert (await anonymous.post("/api/v1/provision", json=tb_request("guess", name))).json() == NOT_FOUND
    # ThingsBoard trims the name: so does the hub, before the key is checked.
    assert (await anonymous.post("/api/v1/provision", json=tb_request(secret, " th-2\n"))).json()["status"] == "SUCCESS"
    assert [d.key async for d in Device.objects.all()] == ["th-2"]


async def test_a_device_chosen_token_or_other_credentials_are_refused(writer, anonymous):
    """The hub generates every token: the SDK's requests with a device's own token, MQTT_BASIC or X509 credentials
    (tb_device_mqtt.TBDeviceMqttClient.provision) are 400 FAILURE, before the profile is even looked up."""
    secret = await profile(writer)
    own_token = tb_request(secret, token="my-own-token", credentialsType="ACCESS_TOKEN")
    assert failure(await anonymous.post("/api/v1/provision", json=own_token), 400).startswith("token:")
    mqtt_basic = tb_request(secret, username="u", password="p", clientId="c", credentialsType="MQTT_BASIC")
    x509 = tb_request(secret, hash="MIIB...", credentialsType="X509_CERTIFICATE")
    for body in (mqtt_basic, x509, tb_request("guess", credentialsType="LWM2M_CREDENTIALS")):
        assert failure(await anonymous.post("/api/v1/provision", json=body), 400).startswith("credentialsType:")
    assert await Device.objects.acount() == 0
    # "" is ThingsBoard's own "no token" (JsonConverter reads a missing field as ""): the hub's token, then.
    answer = await anonymous.post("/api/v1/provision", json=tb_request(secret, token=""))
    assert answer.json()["status"] == "SUCCESS" and answer.json()["credentialsValue"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"provisionDeviceSecret": None}, "provisionDeviceSecret"),  # removed below: missing
        ({"deviceName": None}, "deviceName"),  # ThingsBoard would make up a name; the hub's device needs its key
        ({"deviceName": 5}, "deviceName"),
        ({"provisionDeviceKey": ["field-sensors"]}, "provisionDeviceKey"),
        ({"gateway": True}, "gateway"),
        ({"profile": "field-sensors"}, "profile"),
    ],
)
async def test_a_malformed_thingsboard_body_is_a_400_failure_naming_the_field(writer, anonymous, change, field):
    """A missing, mistyped or unknown field: 400 FAILURE naming it, even with the right secret; nothing created."""
    secret = await profile(writer)
    body = {k: v for k, v in {**tb_request(secret), **change}.items() if v is not None}
    assert failure(await anonymous.post("/api/v1/provision", json=body), 400).startswith(f"{field}:")
    assert await Device.objects.acount() == 0


async def test_the_hubs_own_body_is_answered_as_before(writer, anonymous):
    """The hub's body keeps its 201 {"device", "token"}; a body that is no object keeps the hub's error shape."""
    secret = await profile(writer)
    answer = await anonymous.post(
        "/api/v1/provision", json={"profile": "field-sensors", "secret": secret, "device": "th-1"}
    )
    assert answer.status_code == 201 and answer.json().keys() == {"device", "token"}
    assert (await anonymous.post("/api/v1/provision", json=[tb_request(secret)])).json()["error"]["code"] == "invalid"


@pytest.mark.hub_settings(HUB_PROVISION_RATE_LIMIT=0.01, HUB_PROVISION_RATE_BURST=3)
async def test_thingsboard_requests_count_against_the_same_rate_limit(anonymous):
    """Both bodies draw on one allowance per client address; past it, 429 with Retry-After (the hub's shape)."""
    answers = [(await anonymous.post("/api/v1/provision", json=tb_request("guess"))).status_code for _ in range(3)]
    hub_form = await anonymous.post("/api/v1/provision", json={"profile": "nope", "secret": "x", "device": "th-1"})
    limited = await anonymous.post("/api/v1/provision", json=tb_request("guess"))
    assert answers == [200] * 3 and hub_form.status_code == limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
