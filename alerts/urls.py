from django.urls import path

from alerts import views

app_name = "alerts"
urlpatterns = [
    path("", views.alerts_page, name="open"),
    path("<int:state_id>/ack", views.alert_ack, name="ack"),
    path("rules/", views.rules_page, name="rules"),
]
