from django.urls import path

from dashboards import views
from dashboards.fleet_page import fleet, fleet_json
from dashboards.history_page import device_history

app_name = "dashboards"
urlpatterns = [
    path("", fleet, name="fleet"),
    path("fleet.json", fleet_json, name="fleet-json"),
    path("devices/<slug:key>/", views.device_detail, name="device"),
    path("devices/<slug:key>/history/", device_history, name="history"),
    path("compare/", views.compare, name="compare"),
]
