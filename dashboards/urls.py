from django.urls import path

from dashboards import views

app_name = "dashboards"
urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("devices/<slug:key>/", views.device_detail, name="device"),
]
