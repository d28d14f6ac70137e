"""Alert pages: open alerts (with acknowledge) and rules (list, create, edit, enable or disable, delete)."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.audit import audit_record
from accounts.policy import Action, Actor
from accounts.requests import actor_in, allowed
from accounts.scopes import scope_text
from alerts.forms import PAGE_DEFAULTS, AlertRuleForm
from alerts.models import AlertRule, AlertState, Kind
from alerts.selectors import alerts_open, rules_visible
from alerts.services import alert_acknowledge, alert_rule_delete, alert_rule_enable


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


def rule_may_flap(rule: AlertRule) -> bool:
    """A threshold rule with neither a duration nor a hysteresis fires and resolves on every crossing of a noisy
    value (issue 25: 6 times in 4 minutes): the page warns."""
    return rule.kind == Kind.THRESHOLD and not rule.duration_seconds and not rule.hysteresis


def rule_of(actor: Actor, rule_id: int) -> AlertRule:
    """One of the rules `actor` sees and may change; out of scope is as unknown (404)."""
    rule = rules_visible(actor).filter(id=rule_id).first()
    if rule is None:
        raise Http404("no such rule")
    return rule


@allowed(Action.VIEW)
def rules_page(request: HttpRequest) -> HttpResponse:
    actor = actor_in(request)
    if request.method == "POST" and not actor.may(Action.OPERATE):
        raise PermissionDenied("viewers may not create rules")
    instance = AlertRule(scope=scope_text(actor.scope))
    form = AlertRuleForm(request.POST or None, actor=actor, instance=instance, initial=PAGE_DEFAULTS)
    if request.method == "POST" and form.is_valid():
        form.save()
        audit_record(actor, "rule.create", form.instance, name=form.instance.name)
        messages.success(request, f"Rule {form.instance.name!r} created.")
        return redirect("alerts:rules")
    rules = [(rule, rule_may_flap(rule)) for rule in rules_visible(actor).order_by("name")]
    status = 400 if request.method == "POST" else 200
    return render(request, "alerts/rules.html", {"form": form, "rules": rules}, status=status)


@allowed(Action.OPERATE)
def rule_edit(request: HttpRequest, rule_id: int) -> HttpResponse:
    """The rules page's form for one rule, filled in; saving it changes the rule (audited as the API's change)."""
    actor = actor_in(request)
    rule = rule_of(actor, rule_id)
    name = rule.name  # as stored: the form writes what was posted into `rule` while it validates
    form = AlertRuleForm(request.POST or None, actor=actor, instance=rule)
    if request.method == "POST" and form.is_valid():
        form.save()
        changed = {field: form.cleaned_data[field] for field in form.changed_data}
        audit_record(actor, "rule.change", rule, **{"name": rule.name, **_json_values(changed)})
        messages.success(request, f"Rule {rule.name!r} saved.")
        return redirect("alerts:rules")
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "rule": rule, "name": name, "may_flap": rule_may_flap(rule)}
    return render(request, "alerts/rule_edit.html", context, status=status)


@require_POST
@allowed(Action.OPERATE)
def rule_enabled(request: HttpRequest, rule_id: int) -> HttpResponse:
    """Enable (`enabled=true`) or disable (`enabled=false`) a rule, leaving the rest of it as it is."""
    actor = actor_in(request)
    rule = rule_of(actor, rule_id)
    enabled = request.POST.get("enabled") == "true"
    if alert_rule_enable(rule=rule, enabled=enabled):
        audit_record(actor, "rule.change", rule, name=rule.name, enabled=enabled)
    messages.success(request, f"Rule {rule.name!r} {'enabled' if enabled else 'disabled'}.")
    return redirect("alerts:rules")


@require_POST
@allowed(Action.OPERATE)
def rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    """Delete a rule, with its states and history (the page asks to confirm first)."""
    actor = actor_in(request)
    rule = rule_of(actor, rule_id)
    audit_record(actor, "rule.delete", rule, name=rule.name)
    alert_rule_delete(rule=rule)
    messages.success(request, f"Rule {rule.name!r} deleted.")
    return redirect("alerts:rules")


def _json_values(values: dict[str, object]) -> dict[str, object]:
    """A form's cleaned values as the audit trail stores them (JSON): a device by its key."""
    return {name: getattr(value, "key", value) for name, value in values.items()}
