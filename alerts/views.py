"""Alert pages: open alerts (with acknowledge) and rules (list and create)."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.audit import audit_record
from accounts.policy import Action
from accounts.requests import actor_in, allowed
from accounts.scopes import scope_text
from alerts.forms import AlertRuleForm
from alerts.models import AlertRule, AlertState
from alerts.selectors import alerts_open, rules_visible
from alerts.services import alert_acknowledge


@allowed(Action.VIEW)
def alerts_page(request: HttpRequest) -> HttpResponse:
    firing = actor_in(request).scoped(alerts_open(), "device__labels").order_by("-fired_at")
    return render(request, "alerts/open.html", {"alerts": firing})


@require_POST
@allowed(Action.OPERATE)
def alert_ack(request: HttpRequest, state_id: int) -> HttpResponse:
    user, actor = request.user, actor_in(request)
    if not user.is_authenticated:  # `allowed` let no one else in: this says so to the type checker
        raise PermissionDenied
    state = actor.scoped(AlertState.objects.select_related("rule", "device"), "device__labels").filter(id=state_id)
    firing = state.first()
    if firing is None:
        raise Http404("no such alert")
    if alert_acknowledge(state_id=state_id, user=user):
        audit_record(actor, "alert.acknowledge", firing, rule=firing.rule.name, device=firing.device.key)
    else:
        messages.warning(request, "That alert is no longer firing or was already acknowledged.")
    return redirect("alerts:open")


@allowed(Action.VIEW)
def rules_page(request: HttpRequest) -> HttpResponse:
    actor = actor_in(request)
    if request.method == "POST" and not actor.may(Action.OPERATE):
        raise PermissionDenied("viewers may not create rules")
    form = AlertRuleForm(request.POST or None, actor=actor, instance=AlertRule(scope=scope_text(actor.scope)))
    if request.method == "POST" and form.is_valid():
        form.save()
        audit_record(actor, "rule.create", form.instance, name=form.instance.name)
        messages.success(request, f"Rule {form.instance.name!r} created.")
        return redirect("alerts:rules")
    rules = rules_visible(actor).order_by("name")
    status = 400 if request.method == "POST" else 200
    return render(request, "alerts/rules.html", {"form": form, "rules": rules}, status=status)
