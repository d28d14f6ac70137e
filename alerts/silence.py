"""No-data and offline rules, evaluated on a timer (a loop of the hub runtime): silence fires, hearing
from the device again resolves. Transitions go through the engine's compare-and-set recording."""

import asyncio
import logging

from channels.db import database_sync_to_async

from alerts.engine import FIRED, AlertEngine, Transition, record
from alerts.evaluation import FIRING, Tracked, silence_step
from alerts.models import AlertRule, AlertState, Kind
from alerts.rules import rule_spec
from core.epoch import epoch_ms
from core.epoch import now_ms as wall_clock_ms
from core.protocol import AlertEventPayload
from devices.models import Device
from devices.services import DeviceIdentity
from history.selectors import latest_heard

logger = logging.getLogger(__name__)


def silence_check(*, now_ms: int | None = None, default_webhook: str = "") -> list[AlertEventPayload]:
    """Evaluate every enabled no-data/offline rule against every device in its scope; returns events."""
    now_ms = now_ms if now_ms is not None else wall_clock_ms()
    rules = [rule_spec(r) for r in AlertRule.objects.filter(enabled=True, kind__in=[Kind.NO_DATA, Kind.OFFLINE])]
    if not rules:
        return []
    devices = list(Device.objects.values_list("id", "key", "created_at", "last_seen", "labels"))
    firing = set(
        AlertState.objects.filter(rule_id__in=[r.id for r in rules], state=FIRING).values_list("rule_id", "device_id")
    )
    heard = latest_heard({r.key for r in rules})
    transitions = []
    for rule in rules:
        for device_id, key, created_at, last_seen, labels in devices:
            if not rule.applies_to(device_id, key, labels):
                continue
            if rule.kind == Kind.OFFLINE:
                last = epoch_ms(last_seen or created_at)
            else:
                last = heard.get((device_id, rule.key), epoch_ms(created_at))
            tracked = Tracked(state=FIRING if (rule.id, device_id) in firing else "ok")
            change = silence_step(rule, tracked, last_heard_ms=last, now_ms=now_ms)
            if change:
                at = now_ms if change == FIRED else last
                transitions.append(Transition(rule, DeviceIdentity(device_id, key), change, at, None))
    return record(transitions, default_webhook) if transitions else []


async def silence_loop(engine: AlertEngine) -> None:
    """A loop of the hub runtime: every `silence_check_seconds` of the engine's configuration."""
    config = engine.config
    while True:
        await asyncio.sleep(config.silence_check_seconds)
        try:
            check = database_sync_to_async(silence_check)
            await engine.announce(await check(default_webhook=config.webhooks.default_url))
        except Exception:
            logger.exception("no-data check failed; retrying next interval")
