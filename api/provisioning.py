"""Provisioning profiles (operators: list, create with the secret shown once, get, delete) and the devices'
own `POST /api/v1/provision`: anonymous, rate-limited, and refusing a wrong secret exactly as an unknown
profile; it takes ThingsBoard's provisioning request too, answered as ThingsBoard answers it."""

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import audit_record, audit_record_as
from accounts.policy import Actor
from accounts.requests import actor_in
from api import shapes
from api.access import ProvisionThrottle
from api.devices import labels_in_scope
from api.errors import ApiError, invalid
from api.rest import body_fields
from core.epoch import MAX_MS, from_epoch_ms
from devices.models import Device, ProvisioningProfile
from devices.provisioning import (
    ProfileExists,
    ProvisioningRefused,
    device_provision,
    provisioning_profile_create,
    provisioning_profile_delete,
)
from devices.selectors import provisioning_profile_summary
from devices.services import DevicesRefused

NONE_OR = type(None)


def profiles_visible(actor: Actor) -> list[ProvisioningProfile]:
    """The profiles whose devices would be in the actor's scope (profiles are few)."""
    return [profile for profile in ProvisioningProfile.objects.all() if actor.sees(profile.labels)]


def profile_or_404(actor: Actor, key: str) -> ProvisioningProfile:
    profile = ProvisioningProfile.objects.filter(key=key).first()
    if profile is None or not actor.sees(profile.labels):
        raise ApiError(404, "unknown_profile", f"no provisioning profile {key!r}")
    return profile


class ProfileList(APIView):
    @extend_schema(operation_id="provisioning_profiles_list", responses={200: shapes.ProvisioningProfile(many=True)})
    def get(self, request: Request) -> Response:
        return Response([provisioning_profile_summary(p) for p in profiles_visible(actor_in(request))])

    @extend_schema(
        operation_id="provisioning_profiles_create",
        summary="Create a provisioning profile; its secret is in this answer only",
        request=shapes.ProvisioningProfile,
        responses={201: shapes.ProvisioningProfileCreated, 409: shapes.Error, **shapes.ERRORS},
    )
    def post(self, request: Request) -> Response:
        types: dict[str, type | tuple[type, ...]] = {
            "key": str,
            "key_pattern": str,
            "labels": dict,
            "expires": (int, NONE_OR),
            "max_devices": (int, NONE_OR),
        }
        fields = body_fields(request, types=types, required=["key"])
        actor = actor_in(request)
        labels_in_scope(actor, fields.get("labels") or {})  # the devices it provisions are the caller's
        expires = fields.pop("expires", None)
        if expires is not None and not 0 <= expires <= MAX_MS:
            raise ApiError(400, "invalid", f"expires: ms since the epoch, at most {MAX_MS}", field="expires")
        try:
            profile, secret = provisioning_profile_create(
                **fields, expires_at=from_epoch_ms(expires) if expires is not None else None
            )
        except ValidationError as exc:
            raise invalid(exc.message_dict) from None
        except ProfileExists:
            raise ApiError(409, "conflict", f"a provisioning profile {fields['key']!r} exists", field="key") from None
        audit_record(actor, "profile.create", profile, **{k: v for k, v in fields.items() if k != "key"})
        return Response({**provisioning_profile_summary(profile), "secret": secret}, status=201)


class ProfileDetail(APIView):
    @extend_schema(
        operation_id="provisioning_profiles_get",
        responses={200: shapes.ProvisioningProfile, 404: shapes.Error, **shapes.ERRORS},
    )
    def get(self, request: Request, key: str) -> Response:
        return Response(provisioning_profile_summary(profile_or_404(actor_in(request), key)))

    @extend_schema(
        operation_id="provisioning_profiles_delete",
        summary="Delete a profile: its secret stops working; the devices it provisioned stay",
        responses={204: None, 404: shapes.Error, **shapes.ERRORS},
    )
    def delete(self, request: Request, key: str) -> Response:
        actor = actor_in(request)
        profile = profile_or_404(actor, key)
        try:
            provisioning_profile_delete(key=key)
        except ProvisioningProfile.DoesNotExist:
            raise ApiError(404, "unknown_profile", f"no provisioning profile {key!r}") from None
        audit_record(actor, "profile.delete", profile)
        return Response(status=204)


# Refusals after the secret matched: only a device that knows it learns these.
REFUSED_STATUS = {ProvisioningRefused.REFUSED: 401}

# ThingsBoard's provisioning request (DeviceApiController.provisionDevice): the fields the hub reads, and every key
# its JsonConverter reads, any of which marks a body as ThingsBoard's (answered in ThingsBoard's shape).
TB_FIELDS: dict[str, type | tuple[type, ...]] = {
    "deviceName": str,
    "provisionDeviceKey": str,
    "provisionDeviceSecret": str,
    "credentialsType": str,
    "token": str,
}
TB_KEYS = frozenset(TB_FIELDS) | {"clientId", "username", "password", "hash", "gateway"}
# ThingsBoard's own words for an unknown key or a wrong secret alike (JsonConverter.toJson(ProvisionDeviceResponseMsg)).
TB_NOT_FOUND = {"status": "NOT_FOUND", "errorMsg": "Provision data was not found!"}


def is_thingsboard(data: object) -> bool:
    """Whether a body is ThingsBoard's provisioning request rather than the hub's own."""
    return isinstance(data, dict) and not TB_KEYS.isdisjoint(data)


def thingsboard_fields(request: Request) -> dict[str, str]:
    """ThingsBoard's request as the hub's `profile`, `secret` and `device`; ApiError for one the hub does not serve."""
    data = request.data
    if data.get("credentialsType", "ACCESS_TOKEN") != "ACCESS_TOKEN":
        message = "credentialsType: ACCESS_TOKEN only (no X509_CERTIFICATE, MQTT_BASIC): the hub generates the token"
        raise ApiError(400, "invalid", message, field="credentialsType")
    if data.get("token"):  # "" is ThingsBoard's own "none" (JsonConverter.getStrValue)
        raise ApiError(400, "invalid", "token: the hub generates each device's token; leave token out", field="token")
    required = ["deviceName", "provisionDeviceKey", "provisionDeviceSecret"]
    fields = body_fields(request, types=TB_FIELDS, required=required)
    # ThingsBoard trims the name (DeviceProvisionServiceImpl.provisionDevice); the hub's key is a slug.
    device = fields["deviceName"].strip()
    return {"profile": fields["provisionDeviceKey"], "secret": fields["provisionDeviceSecret"], "device": device}


def tb_failure(message: str, *, status: int = 200) -> Response:
    return Response({"status": "FAILURE", "errorMsg": message}, status=status)


def provisioned(*, profile: str, secret: str, device_key: str, name: str = "") -> tuple[Device, str]:
    """`device_provision`, recorded in the audit trail as the device's own act."""
    device, token = device_provision(profile_key=profile, secret=secret, device_key=device_key, name=name)
    audit_record_as("device", device.key, "device.provision", device, profile=profile)
    return device, token


def thingsboard_provision(request: Request) -> Response:
    """ThingsBoard's request, answered as ThingsBoard does: 200 with `status` for every outcome (its SDKs
    raise_for_status, then read `status`), a refusal never with a token; 400 FAILURE for a body it cannot serve."""
    try:
        fields = thingsboard_fields(request)
    except ApiError as exc:
        return tb_failure(exc.message, status=400)
    try:
        _, token = provisioned(profile=fields["profile"], secret=fields["secret"], device_key=fields["device"])
    except ProvisioningRefused as exc:
        return Response(TB_NOT_FOUND) if exc.code == ProvisioningRefused.REFUSED else tb_failure(exc.message)
    except DevicesRefused as exc:  # an invalid key, or one registered already: ThingsBoard's FAILURE for a duplicate
        return tb_failure(f"deviceName: {exc.problems[0].message}")
    return Response({"status": "SUCCESS", "credentialsType": "ACCESS_TOKEN", "credentialsValue": token})


class Provision(APIView):
    # A device has no session or API token: the profile's secret is its credential.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes = [ProvisionThrottle]

    @extend_schema(
        operation_id="provision",
        summary="A device registers itself through a provisioning profile; its token is in this answer only",
        description="The hub's body: 201; 401 for an unknown profile or a wrong secret alike; 403 for an expired "
        "or used-up profile or a key outside its pattern; 409 when the key is registered already. ThingsBoard's "
        "body (deviceName, provisionDeviceKey, provisionDeviceSecret): 200 with status SUCCESS and the token in "
        "credentialsValue, NOT_FOUND for an unknown profile or a wrong secret alike, FAILURE for any other "
        "refusal (a duplicate, a key outside the pattern, an expired profile); 400 FAILURE for a device-chosen "
        "token, a credentialsType other than ACCESS_TOKEN or a malformed body. Either: 429 past the attempts "
        "allowed per client address (Retry-After).",
        request=shapes.ProvisionEither,
        responses={
            200: shapes.ProvisionAnswerThingsBoard,
            201: shapes.Provisioned,
            400: shapes.ProvisionInvalid,
            401: shapes.Error,
            403: shapes.Error,
            409: shapes.Error,
            429: shapes.Error,
        },  # fmt: skip
    )
    def post(self, request: Request) -> Response:
        if is_thingsboard(request.data):
            return thingsboard_provision(request)
        fields = body_fields(
            request,
            types={"profile": str, "secret": str, "device": str, "name": str},
            required=["profile", "secret", "device"],
        )
        try:
            device, token = provisioned(
                profile=fields["profile"],
                secret=fields["secret"],
                device_key=fields["device"],
                name=fields.get("name", ""),
            )
        except ProvisioningRefused as exc:
            raise ApiError(REFUSED_STATUS.get(exc.code, 403), exc.code, exc.message) from None
        except DevicesRefused as exc:  # the device's key: invalid (400), or registered already (409)
            status, code = (409, "conflict") if exc.conflict else (400, "invalid")
            field = "device" if exc.problems[0].field == "key" else exc.problems[0].field
            raise ApiError(status, code, f"{field}: {exc.problems[0].message}", field=field) from None
        return Response({"device": device.key, "token": token}, status=201)
