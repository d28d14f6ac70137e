from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from api.history import telemetry_history, telemetry_latest, telemetry_window
from hub.health import healthz, metrics, readyz
from transports import device_api
from transports.http import telemetry_post

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="dashboards/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("api/v1/devices/<slug:key>/telemetry", telemetry_history, name="telemetry-history"),
    path("api/v1/devices/<slug:key>/telemetry.csv", telemetry_history, {"fmt": "csv"}, name="telemetry-csv"),
    path("api/v1/devices/<slug:key>/latest", telemetry_latest, name="telemetry-latest"),
    path("api/v1/devices/<slug:key>/window", telemetry_window, name="telemetry-window"),
    path("favicon.ico", RedirectView.as_view(url=static("dashboards/favicon.svg"), permanent=True)),
    path("api/v1/<str:token>/telemetry", telemetry_post, name="telemetry-post"),
    # ThingsBoard's HTTP device API: attributes and commands (docs/commands.md)
    path("api/v1/<str:token>/attributes", device_api.attributes, name="device-api-attributes"),
    path("api/v1/<str:token>/attributes/updates", device_api.attribute_updates, name="device-api-attribute-updates"),
    path("api/v1/<str:token>/rpc", device_api.rpc, name="device-api-rpc"),
    path("api/v1/<str:token>/rpc/<int:command_id>", device_api.rpc_reply, name="device-api-rpc-reply"),
    path("alerts/", include("alerts.urls")),
    path("", include("dashboards.urls")),
    path("api/v1/", include("api.urls")),  # the operator API, its schema and docs (docs/api.md)
]

handler404 = "dashboards.errors.not_found"  # the site's own page (the API: its JSON error)
