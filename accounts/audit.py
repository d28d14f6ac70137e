"""The audit trail: one row per change a person, a token, a device or the hub made (docs/security.md)."""

import asyncio
import logging
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.db.models import Model, QuerySet
from django.utils import timezone

from accounts.models import AuditEvent
from accounts.policy import Actor
from devices.models import Device, ProvisioningProfile

logger = logging.getLogger(__name__)

Kind = AuditEvent.ActorKind


def audit_record(actor: Actor, action: str, target: Model | None = None, **detail: object) -> AuditEvent:
    """Record that `actor` did `action` (e.g. "device.delete") to `target`; `detail` says how (JSON values)."""
    return AuditEvent.objects.create(
        actor_kind=Kind.TOKEN if actor.token_id is not None else Kind.USER,
        user_id=actor.user_id,
        actor=actor.name[:150],
        token_id=actor.token_id,
        action=action,
        address=actor.address,
        detail=detail,
        **_target(target),
    )


def audit_record_as(kind: str, name: str, action: str, target: Model | None = None, **detail: object) -> AuditEvent:
    """Record what a device (`kind` "device", `name` its key) or the hub itself ("system") did."""
    return AuditEvent.objects.create(actor_kind=kind, actor=name[:150], action=action, detail=detail, **_target(target))


def _target(target: Model | None) -> dict[str, str]:
    if target is None:
        return {}
    # A device and a provisioning profile are known by their key (their identity in URLs and topics), anything
    # else by its id: an alert rule's `key` is the reading key it watches, not its name.
    ident = target.key if isinstance(target, Device | ProvisioningProfile) else target.pk
    return {"object_type": target._meta.model_name or "", "object_id": str(ident)[:200]}


def audit_events(
    *,
    actor: str = "",
    action: str = "",
    object_type: str = "",
    object_id: str = "",
    start: datetime | None = None,
    end: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Events newest first, narrowed by each filter given: `actor` a username or device key, `action` exact or a
    prefix ending in "." ("device." is every device action), [start, end)."""
    events = AuditEvent.objects.order_by("-at", "-id")
    if actor:
        events = events.filter(actor=actor)
    if action:
        events = events.filter(action__startswith=action) if action.endswith(".") else events.filter(action=action)
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    if start is not None:
        events = events.filter(at__gte=start)
    if end is not None:
        events = events.filter(at__lt=end)
    return events


def audit_prune(*, days: float) -> int:
    """Forget events older than `days` (HUB_AUDIT_RETENTION_DAYS); how many went."""
    deleted, _ = AuditEvent.objects.filter(at__lt=timezone.now() - timedelta(days=days)).delete()
    return deleted


async def audit_prune_loop(days: int, interval_seconds: float) -> None:
    """Prune the trail every `interval_seconds` (a loop of the hub runtime; days > 0)."""
    # No cluster-wide lock, unlike readings' retention: one indexed DELETE, and two processes running it at once
    # delete each row once between them.
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            if deleted := await database_sync_to_async(audit_prune)(days=days):
                logger.info("audit retention: deleted %d events older than %d days", deleted, days)
        except Exception:
            logger.exception("audit retention failed; retrying next interval")
