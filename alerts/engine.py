"""The alert engine of one process: evaluates committed readings in memory and persists transitions.

An after-commit consumer (ingest/commits.py) with its own queue and task: a slow transition write delays
neither acks nor dashboards; when it falls behind, it evaluates the merged backlog in one pass. Rules are a
cached snapshot refreshed every HUB_ALERT_RULES_REFRESH_SECONDS, states are cached after one load. Only
transitions touch the database, each in a transaction that re-reads the row under a lock, so with several
hub processes a firing is recorded once (the process that loses the race records nothing). Recorded events
go out through the one publisher.
"""

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from alerts.config import AlertConfig
from alerts.evaluation import FIRED, PENDING_CLEARED, PENDING_STARTED, RESOLVED, RuleSpec, Tracked, threshold_step
from alerts.models import AlertEvent, AlertRule, AlertState, Kind, State, WebhookDelivery, alert_event_payload
from alerts.rules import rule_spec
from core.epoch import epoch_ms, from_epoch_ms
from core.logs import ThrottledLog
from core.protocol import AlertEventPayload
from devices.selectors import device_labels_by_id
from devices.services import DeviceIdentity
from ingest.commits import Committed
from ingest.parsing import Reading
from live.publisher import Publisher

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Transition:
    rule: RuleSpec
    device: DeviceIdentity
    kind: str  # pending | cleared | fired | resolved
    ts: int
    value: float | None


class AlertEngine:
    """Threshold rules, evaluated as readings are committed. (Silence rules run on a timer: silence.py.)"""

    name = "alerts"

    def __init__(self, publisher: Publisher, config: AlertConfig) -> None:
        self._publisher = publisher
        self.config = config
        self._shed_log = ThrottledLog(logger)
        self._rules: list[RuleSpec] = []
        self._loaded_at = -1e9
        self._by_device: dict[int, dict[str, list[RuleSpec]]] = {}
        self._labels: dict[int, dict[str, str]] = {}  # device id -> labels (loaded only when a rule needs them)
        self._states: dict[tuple[int, int], Tracked] = {}

    async def consume(self, committed: Committed) -> None:
        """Evaluate committed readings; persist and announce the transitions they caused (a CommitConsumer).

        Rules come from the snapshot `rules_loop` refreshes: the evaluation never waits for the database's
        thread (busy with a thousand devices authenticating, it held the engine seconds behind), except for
        the first batch and with HUB_ALERT_RULES_REFRESH_SECONDS=0 (a reload before every batch, for tests)."""
        if self._loaded_at < 0 or self.config.rules_refresh_seconds <= 0:
            await self.refresh()
        if not self._rules:
            return
        transitions = [t for device, readings in committed.items() for t in self._evaluate(device, readings)]
        if transitions:
            await self.announce(await database_sync_to_async(record)(transitions, self.config.webhooks.default_url))

    async def shed(self, devices: set[DeviceIdentity]) -> None:
        self._shed_log.warning("alerts: readings of %d devices not evaluated (the engine fell behind)", len(devices))

    async def announce(self, events: list[AlertEventPayload]) -> None:
        """Publish recorded events so open dashboards update live (best effort)."""
        for event in events:
            await self._publisher.alert_event(event)

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
                if rule.applies_to(device.id, device.key, self._labels.get(device.id)):
                    rules.setdefault(rule.key, []).append(rule)
            self._by_device[device.id] = rules
        return rules

    def _tracked(self, rule_id: int, device_id: int) -> Tracked:
        return self._states.setdefault((rule_id, device_id), Tracked())

    async def rules_loop(self) -> None:
        """A loop of the hub runtime: the rule snapshot reloaded every HUB_ALERT_RULES_REFRESH_SECONDS."""
        interval = self.config.rules_refresh_seconds
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                logger.warning("alert rules not reloaded; the previous ones stay", exc_info=True)

    async def refresh(self) -> None:
        self._loaded_at = time.monotonic()
        self._rules, states, self._labels = await _load()
        self._by_device = {}
        live = {r.id for r in self._rules}
        self._states = {k: v for k, v in self._states.items() if k[0] in live}
        for (rule_id, device_id), (state, since) in states.items():
            tracked = self._tracked(rule_id, device_id)
            if tracked.last_ts == 0:  # adopt the database's view (a restart, another process) for new pairs
                tracked.state, tracked.pending_since = state, since


@database_sync_to_async
def _load() -> tuple[list[RuleSpec], dict[tuple[int, int], tuple[str, int | None]], dict[int, dict[str, str]]]:
    rules = [rule_spec(r) for r in AlertRule.objects.filter(enabled=True, kind=Kind.THRESHOLD)]
    labels = device_labels_by_id() if any(r.labels or r.scope for r in rules) else {}
    states = {
        (s.rule_id, s.device_id): (s.state, epoch_ms(s.pending_since) if s.pending_since else None)
        for s in AlertState.objects.filter(rule__enabled=True, rule__kind=Kind.THRESHOLD).exclude(state=State.OK)
    }
    return rules, states, labels


def record(transitions: list[Transition], default_webhook: str = "") -> list[AlertEventPayload]:
    """Persist transitions; returns the events recorded (fired/resolved), each exactly once. An event of a rule
    without a webhook URL of its own is delivered to `default_webhook` (when set)."""
    events = []
    for t in transitions:
        with transaction.atomic():
            state, _ = AlertState.objects.select_for_update().get_or_create(rule_id=t.rule.id, device_id=t.device.id)
            event = _apply(state, t, default_webhook)
            if event is not None:
                events.append(event)
    return events


def _apply(state: AlertState, t: Transition, default_webhook: str) -> AlertEventPayload | None:
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
        return _event(t, AlertEvent.Type.FIRED, at, default_webhook)
    elif t.kind == RESOLVED and state.state == State.FIRING:
        state.state, state.pending_since = State.OK, None
        state.save()
        return _event(t, AlertEvent.Type.RESOLVED, at, default_webhook)
    return None


def _event(t: Transition, kind: str, at: datetime, default_webhook: str) -> AlertEventPayload:
    event = AlertEvent.objects.create(
        rule_id=t.rule.id, device_id=t.device.id, type=kind, at=at, value=t.value, severity=t.rule.severity
    )
    payload = alert_event_payload(
        event_id=event.id, kind=kind, rule=t.rule, device_key=t.device.key, at_ms=epoch_ms(at), value=t.value
    )
    url = t.rule.webhook_url or default_webhook
    if url:
        WebhookDelivery.objects.create(event=event, url=url, payload=payload, next_attempt_at=timezone.now())
    return payload
