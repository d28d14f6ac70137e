"""The alert engine of one process: evaluates committed readings in memory and persists transitions.

Called by the writer after each commit with that flush's readings (no database round trip per reading):
rules are a cached snapshot refreshed every HUB_ALERT_RULES_REFRESH_SECONDS, states are cached after one
load. Only transitions touch the database, each in a transaction that re-reads the row under a lock, so
with several hub processes a firing is recorded once (the process that loses the race records nothing).
"""

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from alerts.evaluation import FIRED, PENDING_CLEARED, PENDING_STARTED, RESOLVED, RuleSpec, Tracked, threshold_step
from alerts.models import AlertEvent, AlertRule, AlertState, Kind, State, WebhookDelivery, alert_event_payload
from alerts.rules import rule_spec
from core.epoch import epoch_ms, from_epoch_ms
from devices.services import DeviceIdentity
from ingest.fanout import device_group
from ingest.parsing import Reading

logger = logging.getLogger(__name__)

ALERTS_GROUP = "alerts"


@dataclass(frozen=True, slots=True)
class Transition:
    rule: RuleSpec
    device: DeviceIdentity
    kind: str  # pending | cleared | fired | resolved
    ts: int
    value: float | None


class AlertEngine:
    """Threshold rules, evaluated as readings are committed. (Silence rules run on a timer: silence.py.)"""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._rules: list[RuleSpec] = []
        self._loaded_at = -1e9
        self._by_device: dict[int, dict[str, list[RuleSpec]]] = {}
        self._states: dict[tuple[int, int], Tracked] = {}

    async def on_committed(self, by_device: dict[DeviceIdentity, list[Reading]]) -> None:
        """Evaluate a committed flush; persist and announce the transitions it caused."""
        await self._refresh()
        if not self._rules:
            return
        transitions = [t for device, readings in by_device.items() for t in self._evaluate(device, readings)]
        if transitions:
            await record_transitions(transitions)

    def _evaluate(self, device: DeviceIdentity, readings: list[Reading]) -> Iterable[Transition]:
        rules = self._rules_for(device)
        if not rules:
            return
        for r in sorted(readings, key=lambda r: r.ts):
            if r.value is None:
                continue
            for rule in rules.get(r.key, ()):
                change = threshold_step(rule, self._tracked(rule.id, device.id), r.ts, r.value)
                if change:
                    yield Transition(rule, device, change, r.ts, r.value)

    def _rules_for(self, device: DeviceIdentity) -> dict[str, list[RuleSpec]]:
        """Threshold rules that apply to this device, by reading key (cached until the next refresh)."""
        rules = self._by_device.get(device.id)
        if rules is None:
            rules = {}
            for rule in self._rules:
                if rule.applies_to(device.id, device.key):
                    rules.setdefault(rule.key, []).append(rule)
            self._by_device[device.id] = rules
        return rules

    def _tracked(self, rule_id: int, device_id: int) -> Tracked:
        return self._states.setdefault((rule_id, device_id), Tracked())

    async def _refresh(self) -> None:
        if time.monotonic() - self._loaded_at < settings.HUB_ALERT_RULES_REFRESH_SECONDS:
            return
        self._loaded_at = time.monotonic()
        self._rules, states = await _load()
        self._by_device = {}
        live = {r.id for r in self._rules}
        self._states = {k: v for k, v in self._states.items() if k[0] in live}
        for (rule_id, device_id), (state, since) in states.items():
            tracked = self._tracked(rule_id, device_id)
            if tracked.last_ts == 0:  # adopt the database's view (a restart, another process) for new pairs
                tracked.state, tracked.pending_since = state, since


@database_sync_to_async
def _load() -> tuple[list[RuleSpec], dict[tuple[int, int], tuple[str, int | None]]]:
    rules = [rule_spec(r) for r in AlertRule.objects.filter(enabled=True, kind=Kind.THRESHOLD)]
    states = {
        (s.rule_id, s.device_id): (s.state, epoch_ms(s.pending_since) if s.pending_since else None)
        for s in AlertState.objects.filter(rule__enabled=True, rule__kind=Kind.THRESHOLD).exclude(state=State.OK)
    }
    return rules, states


async def record_transitions(transitions: list[Transition]) -> None:
    await announce(await database_sync_to_async(record)(transitions))


async def announce(events: list[dict]) -> None:
    """Publish recorded events to the `alerts` group so open dashboards update live (best effort)."""
    layer = get_channel_layer()
    if layer is None:
        return
    for event in events:
        message = {"type": "alert.event", "event": event}
        try:  # the fleet page follows every alert; a device page follows its device's group
            await layer.group_send(ALERTS_GROUP, message)
            await layer.group_send(device_group(event["device"]), message)
        except Exception:
            logger.warning("could not announce alert event on the channel layer", exc_info=True)


def record(transitions: list[Transition]) -> list[dict]:
    """Persist transitions; returns the events recorded (fired/resolved), each exactly once."""
    events = []
    for t in transitions:
        with transaction.atomic():
            state, _ = AlertState.objects.select_for_update().get_or_create(rule_id=t.rule.id, device_id=t.device.id)
            event = _apply(state, t)
            if event is not None:
                events.append(event)
    return events


def _apply(state: AlertState, t: Transition) -> dict | None:
    at = from_epoch_ms(t.ts)
    if t.kind == PENDING_STARTED and state.state == State.OK:
        state.state, state.pending_since, state.value = State.PENDING, at, t.value
        state.save()
    elif t.kind == PENDING_CLEARED and state.state == State.PENDING:
        state.state, state.pending_since = State.OK, None
        state.save()
    elif t.kind == FIRED and state.state != State.FIRING:  # compare-and-set: recorded once
        state.state, state.fired_at, state.value = State.FIRING, at, t.value
        state.acknowledged_by, state.acknowledged_at = None, None
        state.save()
        return _event(t, AlertEvent.Type.FIRED, at)
    elif t.kind == RESOLVED and state.state == State.FIRING:
        state.state, state.pending_since = State.OK, None
        state.save()
        return _event(t, AlertEvent.Type.RESOLVED, at)
    return None


def _event(t: Transition, kind: str, at: datetime) -> dict:
    event = AlertEvent.objects.create(
        rule_id=t.rule.id, device_id=t.device.id, type=kind, at=at, value=t.value, severity=t.rule.severity
    )
    payload = alert_event_payload(
        event_id=event.id, kind=kind, rule=t.rule, device_key=t.device.key, at_ms=epoch_ms(at), value=t.value
    )
    url = t.rule.webhook_url or settings.HUB_ALERT_WEBHOOK_URL
    if url:
        WebhookDelivery.objects.create(event=event, url=url, payload=payload, next_attempt_at=timezone.now())
    return payload


_engine: AlertEngine | None = None


def alert_engine() -> AlertEngine:
    global _engine
    if _engine is None or _engine.loop is not asyncio.get_running_loop():
        _engine = AlertEngine()
    return _engine


async def alerts_on_committed(by_device: dict[DeviceIdentity, list[Reading]]) -> None:
    """The writer's after-commit hook (after fan-out)."""
    await alert_engine().on_committed(by_device)
