"""The shapes of the API's bodies, for its OpenAPI schema (drf-spectacular reads these serializers). Views
validate with the hub's own services and forms, so a refusal carries the same message as a page or command."""

from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from alerts.models import Condition, Kind, Severity, State
from api.models import Scope
from devices.selectors import STATUSES


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(required=False, help_text="the body field at fault")
    rows = serializers.ListField(child=serializers.DictField(), required=False, help_text="bulk: every refused row")


class Error(serializers.Serializer):
    error = ErrorDetail()


class Device(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200, allow_blank=True)
    labels = serializers.DictField(child=serializers.CharField())
    created = serializers.IntegerField(help_text="ms since the epoch, UTC")
    last_seen = serializers.IntegerField(allow_null=True, help_text="ms since the epoch, UTC; null: never")
    status = serializers.ChoiceField(choices=STATUSES)


class DeviceCreate(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    labels = serializers.DictField(child=serializers.CharField(), required=False)


class DeviceUpdate(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    labels = serializers.DictField(child=serializers.CharField(), required=False, help_text="replaces every label")


class DeviceCreated(Device):
    token = serializers.CharField(help_text="the device's token: shown this once, stored only as a hash")


class DeviceToken(serializers.Serializer):
    key = serializers.SlugField()
    token = serializers.CharField(help_text="shown this once")


class BulkCreate(serializers.Serializer):
    devices = DeviceCreate(many=True)


class BulkCreated(serializers.Serializer):
    created = serializers.IntegerField()
    devices = DeviceToken(many=True)


class AlertRule(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=200)
    enabled = serializers.BooleanField(required=False)
    device = serializers.SlugField(allow_null=True, required=False, help_text="one device's key, or null")
    device_pattern = serializers.CharField(required=False, allow_blank=True, help_text="e.g. boiler-*")
    device_labels = serializers.CharField(required=False, allow_blank=True, help_text="e.g. site=north")
    key = serializers.CharField(required=False, allow_blank=True)
    kind = serializers.ChoiceField(choices=Kind.choices, required=False)
    condition = serializers.ChoiceField(choices=Condition.choices, required=False, allow_blank=True)
    threshold = serializers.FloatField(allow_null=True, required=False)
    threshold_high = serializers.FloatField(allow_null=True, required=False)
    duration_seconds = serializers.IntegerField(min_value=0, required=False)
    hysteresis = serializers.FloatField(required=False)
    no_data_seconds = serializers.IntegerField(min_value=0, required=False)
    severity = serializers.ChoiceField(choices=Severity.choices, required=False)
    webhook_url = serializers.URLField(required=False, allow_blank=True, help_text="admins only")
    scope = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="its maker's label scope; empty: every device"
    )
    created = serializers.IntegerField(read_only=True)


class RuleRef(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    key = serializers.CharField()
    severity = serializers.ChoiceField(choices=Severity.choices)


class AlertState(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=State.choices)
    rule = RuleRef()
    device = serializers.SlugField()
    fired_at = serializers.IntegerField(allow_null=True)
    value = serializers.FloatField(allow_null=True)
    acknowledged_by = serializers.CharField(allow_null=True)
    acknowledged_at = serializers.IntegerField(allow_null=True)


class AlertEvent(serializers.Serializer):
    id = serializers.IntegerField()
    type = serializers.ChoiceField(choices=["fired", "resolved", "acknowledged"])
    rule = RuleRef()
    device = serializers.SlugField()
    at = serializers.IntegerField(help_text="ms since the epoch, UTC")
    value = serializers.FloatField(allow_null=True)
    by = serializers.CharField(allow_null=True, help_text="who acknowledged")


class AlertEvents(serializers.Serializer):
    device = serializers.SlugField()
    start = serializers.IntegerField()
    end = serializers.IntegerField()
    events = AlertEvent(many=True)


class ApiToken(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    user = serializers.CharField(read_only=True, help_text="its user's username")
    scope = serializers.ChoiceField(choices=Scope.choices, required=False)
    created = serializers.IntegerField(read_only=True)
    revoked = serializers.IntegerField(allow_null=True, read_only=True)


class ApiTokenCreated(ApiToken):
    token = serializers.CharField(help_text="shown this once, stored only as a hash")


class ProvisioningProfile(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    key_pattern = serializers.CharField(max_length=100, required=False, help_text="shell-style, e.g. th-*")
    labels = serializers.DictField(child=serializers.CharField(), required=False)
    expires = serializers.IntegerField(allow_null=True, required=False, help_text="ms since the epoch, UTC")
    max_devices = serializers.IntegerField(min_value=1, allow_null=True, required=False)
    provisioned = serializers.IntegerField(read_only=True)
    created = serializers.IntegerField(read_only=True)


class ProvisioningProfileCreated(ProvisioningProfile):
    secret = serializers.CharField(help_text="shown this once, stored only as a hash")


class Provision(serializers.Serializer):
    profile = serializers.SlugField(help_text="the provisioning profile's key")
    secret = serializers.CharField(help_text="the profile's secret")
    device = serializers.SlugField(help_text="this device's own key")
    name = serializers.CharField(required=False, allow_blank=True)


class Provisioned(serializers.Serializer):
    device = serializers.SlugField()
    token = serializers.CharField(help_text="the device's token: shown this once")


# ThingsBoard's device provisioning request and answers (its HTTP device API: DeviceApiController.provisionDevice,
# JsonConverter), served on the same path so a device written for ThingsBoard provisions itself unchanged.
class ProvisionThingsBoard(serializers.Serializer):
    deviceName = serializers.SlugField(max_length=64, help_text="this device's own key (a slug, as every hub key)")
    provisionDeviceKey = serializers.CharField(help_text="the provisioning profile's key")
    provisionDeviceSecret = serializers.CharField(help_text="the profile's secret")
    credentialsType = serializers.ChoiceField(
        choices=["ACCESS_TOKEN"], required=False, help_text="the only kind served: the hub generates the token"
    )


# `status` is a plain string here: a second choice set named "status" would rename the devices' StatusEnum.
class ProvisionedThingsBoard(serializers.Serializer):
    status = serializers.CharField(help_text="SUCCESS")
    credentialsType = serializers.ChoiceField(choices=["ACCESS_TOKEN"])
    credentialsValue = serializers.CharField(help_text="the device's token: shown this once")


class ProvisionRefusedThingsBoard(serializers.Serializer):
    status = serializers.CharField(help_text="NOT_FOUND: an unknown profile or a wrong secret, alike; else FAILURE")
    errorMsg = serializers.CharField()


ProvisionEither = PolymorphicProxySerializer(
    component_name="ProvisionEither",
    serializers=[Provision, ProvisionThingsBoard],
    resource_type_field_name=None,
)
ProvisionAnswerThingsBoard = PolymorphicProxySerializer(
    component_name="ProvisionAnswerThingsBoard",
    serializers=[ProvisionedThingsBoard, ProvisionRefusedThingsBoard],
    resource_type_field_name=None,
)
ProvisionInvalid = PolymorphicProxySerializer(
    component_name="ProvisionInvalid",
    serializers=[Error, ProvisionRefusedThingsBoard],
    resource_type_field_name=None,
)


# What any operator endpoint may answer besides success: a bad value, no operator, not allowed.
ERRORS = {400: Error, 401: Error, 403: Error}


class AuditEvent(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.IntegerField(help_text="ms since the epoch, UTC")
    actor_kind = serializers.ChoiceField(choices=["user", "token", "device", "system"])
    actor = serializers.CharField(help_text="the username, or the device key, at the time")
    token_id = serializers.IntegerField(allow_null=True, help_text="the API token the user acted through")
    action = serializers.CharField(help_text="e.g. login.failed, device.delete, alert.acknowledge")
    object_type = serializers.CharField(allow_blank=True, help_text="e.g. device, alertrule")
    object_id = serializers.CharField(allow_blank=True, help_text="a device's key, else the id")
    address = serializers.CharField(allow_blank=True, help_text="the client's address")
    detail = serializers.DictField(help_text="how: the changed fields, never a secret")


USER_ROLES = ["viewer", "operator", "admin"]  # accounts.policy.ROLE_GROUPS


class User(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(max_length=150)
    email = serializers.EmailField(allow_blank=True)
    active = serializers.BooleanField(help_text="false: cannot log in, their API tokens stop working")
    # Text, not a choice: an enum of four beside the bodies' three would collide in the schema's names.
    role = serializers.CharField(help_text="viewer, operator, admin, or none (logged in, but sees nothing)")
    scope = serializers.ListField(
        child=serializers.CharField(), help_text="the selectors limiting them (their own and their groups'); []: all"
    )
    own_scope = serializers.ListField(child=serializers.CharField(), help_text="the selectors given to them alone")
    last_login = serializers.DateTimeField(allow_null=True)


class UserCreate(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(
        required=False, allow_null=True, help_text="checked by the hub's password rules; null or absent: none"
    )
    role = serializers.ChoiceField(choices=USER_ROLES)
    scope = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="label selectors, e.g. site=north; not for admins"
    )
    email = serializers.EmailField(required=False, allow_blank=True)


class UserUpdate(serializers.Serializer):
    role = serializers.ChoiceField(choices=USER_ROLES, required=False)
    scope = serializers.ListField(child=serializers.CharField(), required=False, help_text="replaces their own scope")
    active = serializers.BooleanField(required=False)
    password = serializers.CharField(required=False, allow_null=True, help_text="null: no password (API tokens only)")
    email = serializers.EmailField(required=False, allow_blank=True)
