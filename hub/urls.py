from django.contrib import admin
from django.urls import include, path

from ingest.views import telemetry_post

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/<str:token>/telemetry", telemetry_post, name="telemetry-post"),
    path("", include("dashboards.urls")),
]
