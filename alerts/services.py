"""Operator actions on alerts."""

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from alerts.models import AlertEvent, AlertState, State


def alert_acknowledge(*, state_id: int, user: AbstractBaseUser) -> bool:
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
