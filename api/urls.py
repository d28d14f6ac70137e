"""/api/v1/: the operator API (docs/api.md), its OpenAPI schema and its docs page. The history endpoints
(`devices/<KEY>/telemetry`, `.csv`, `latest`) keep their routes and names in hub/urls.py; they are REST
framework views too (dashboards/api.py), so the schema lists them."""

from django.urls import path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerSplitView

from api import alerts, audit, control, devices, provisioning, tokens, users

app_name = "api"
urlpatterns = [
    path("devices", devices.DeviceList.as_view(), name="devices"),
    path("devices/bulk", devices.DeviceBulk.as_view(), name="devices-bulk"),
    path("devices/<slug:key>", devices.DeviceDetail.as_view(), name="device"),
    path("devices/<slug:key>/token", devices.DeviceTokenRotate.as_view(), name="device-token"),
    path("devices/<slug:key>/alert-events", devices.DeviceAlertEvents.as_view(), name="device-alert-events"),
    path("devices/<slug:key>/attributes", control.AttributeList.as_view(), name="device-attributes"),
    path("devices/<slug:key>/attributes/<slug:scope>", control.AttributeScope.as_view(), name="device-attributes-set"),
    path("devices/<slug:key>/rpc", control.commands, name="device-rpc"),
    path("devices/<slug:key>/rpc/<int:command_id>", control.CommandDetail.as_view(), name="device-command"),
    path("alert-rules", alerts.RuleList.as_view(), name="alert-rules"),
    path("alert-rules/<int:rule_id>", alerts.RuleDetail.as_view(), name="alert-rule"),
    path("alerts", alerts.FiringList.as_view(), name="alerts"),
    path("alerts/<int:state_id>/acknowledge", alerts.Acknowledge.as_view(), name="alert-acknowledge"),
    path("tokens", tokens.TokenList.as_view(), name="tokens"),
    path("tokens/<int:token_id>", tokens.TokenRevoke.as_view(), name="token"),
    path("users", users.UserList.as_view(), name="users"),
    path("users/<int:user_id>", users.UserDetail.as_view(), name="user"),
    path("provisioning-profiles", provisioning.ProfileList.as_view(), name="provisioning-profiles"),
    path("provisioning-profiles/<slug:key>", provisioning.ProfileDetail.as_view(), name="provisioning-profile"),
    path("provision", provisioning.Provision.as_view(), name="provision"),
    path("audit", audit.AuditList.as_view(), name="audit"),
    path("schema", SpectacularJSONAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's init script as a file: the hub's CSP allows no inline script.
    path(
        "docs",
        SpectacularSwaggerSplitView.as_view(url_name="api:schema", template_name="api/swagger_ui.html"),
        name="docs",
    ),
]
