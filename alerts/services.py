"""Operator actions on alerts: acknowledge, and rules written through the rules page's validation."""

from collections.abc import Mapping

from django.contrib.auth.models import User
from django.db import transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from accounts.policy import Actor
from accounts.scopes import scope_text
from alerts.forms import AlertRuleForm
from alerts.models import AlertEvent, AlertRule, AlertState, State


def alert_acknowledge(*, state_id: int, user: User) -> bool:
    """Record that `user` acknowledged a firing alert; False if it is no longer firing."""
    with transaction.atomic():
        state = AlertState.objects.select_for_update().select_related("rule").filter(id=state_id).first()
        if state is None or state.state != State.FIRING or state.acknowledged_at is not None:
            return False
        state.acknowledged_by, state.acknowledged_at = user, timezone.now()
        state.save(update_fields=["acknowledged_by", "acknowledged_at", "updated_at"])
        AlertEvent.objects.create(
            rule=state.rule,
            device=state.device,
            type=AlertEvent.Type.ACKNOWLEDGED,
            at=state.acknowledged_at,
            value=state.value,
            severity=state.rule.severity,
            by=user,
        )
    return True


def alert_rule_enable(*, rule: AlertRule, enabled: bool) -> bool:
    """Enable or disable a rule and change nothing else (not validated again: a rule whose key or webhook host
    went away since can still be switched off); False if it already was."""
    if rule.enabled == enabled:
        return False
    rule.enabled = enabled
    rule.save(update_fields=["enabled"])
    return True


def alert_rule_delete(*, rule: AlertRule) -> None:
    """Delete a rule with its states, events and deliveries (the engine drops it at its next rule refresh)."""
    rule.delete()


class RuleRefused(Exception):
    """The rule form refused the values: `errors` maps each field to the page's own messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items()))
        self.errors = errors


def alert_rule_save(*, values: Mapping[str, object], actor: Actor, rule: AlertRule | None = None) -> AlertRule:
    """Create a rule (`rule` None) or change the given fields of one, through the rules page's form, so the API
    and the page refuse the same values with the same messages (AlertRuleForm, AlertRule.clean). `device` is a
    device key. Raises RuleRefused. (A rule that depends on who writes, such as staff-only webhook URLs, belongs
    in the form too; this is the one place the API builds it.) A new rule takes the actor's label scope."""
    if rule is None:  # the empty page's values: the model's defaults
        rule, base = AlertRule(), {name: field.initial for name, field in AlertRuleForm.base_fields.items()}
    else:
        base = model_to_dict(rule, fields=AlertRuleForm.Meta.fields)
    data = {**base, **values}
    if isinstance(data.get("device"), str):  # the API names devices by key, the form by id
        device_id = actor.devices().filter(key=data["device"]).values_list("id", flat=True).first()
        data["device"] = device_id if device_id is not None else data["device"]
    if rule.pk is None:
        rule.scope = scope_text(actor.scope)
    form = AlertRuleForm(data, instance=rule, actor=actor)
    if not form.is_valid():
        # Iterating an ErrorList yields its messages as text (ErrorList.__getitem__); django-stubs types the items
        # as the ValidationErrors it stores.
        raise RuleRefused({field: list(messages) for field, messages in form.errors.items()})  # type: ignore[arg-type]
    return form.save()
