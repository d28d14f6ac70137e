from django.urls import path

from dashboards import views
from dashboards.history_page import device_history

app_name = "dashboards"
urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("fleet.json", views.fleet_json, name="fleet-json"),
    path("devices/<slug:key>/", views.device_detail, name="device"),
    path("devices/<slug:key>/history/", device_history, name="history"),
]
