"""Alert pages: open alerts (with acknowledge) and rules (list and create)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from alerts.forms import AlertRuleForm
from alerts.models import AlertRule
from alerts.selectors import alerts_open
from alerts.services import alert_acknowledge


@login_required
def alerts_page(request: HttpRequest) -> HttpResponse:
    return render(request, "alerts/open.html", {"alerts": alerts_open().order_by("-fired_at")})


@login_required
@require_POST
def alert_ack(request: HttpRequest, state_id: int) -> HttpResponse:
    user = request.user
    if not user.is_authenticated:  # login_required let no one else in: this says so to the type checker
        raise PermissionDenied
    if not alert_acknowledge(state_id=state_id, user=user):
        messages.warning(request, "That alert is no longer firing or was already acknowledged.")
    return redirect("alerts:open")


@login_required
def rules_page(request: HttpRequest) -> HttpResponse:
    form = AlertRuleForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Rule {form.instance.name!r} created.")
        return redirect("alerts:rules")
    rules = AlertRule.objects.select_related("device").order_by("name")
    status = 400 if request.method == "POST" else 200
    return render(request, "alerts/rules.html", {"form": form, "rules": rules}, status=status)
