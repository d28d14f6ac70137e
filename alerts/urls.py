from django.urls import path

from alerts import views

app_name = "alerts"
urlpatterns = [
    path("", views.alerts_page, name="open"),
    path("<int:state_id>/ack", views.alert_ack, name="ack"),
    path("rules/", views.rules_page, name="rules"),
    path("rules/<int:rule_id>/", views.rule_edit, name="rule"),
    path("rules/<int:rule_id>/enabled", views.rule_enabled, name="rule-enabled"),
    path("rules/<int:rule_id>/delete", views.rule_delete, name="rule-delete"),
]
