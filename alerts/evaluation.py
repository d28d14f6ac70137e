"""The alert state machine, pure: a rule, the tracked state of one (rule, device), a reading in; a
transition out. ok → pending → firing → (resolved) ok. No I/O here."""

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

OK, PENDING, FIRING = "ok", "pending", "firing"
# Transitions that must be persisted.
PENDING_STARTED, PENDING_CLEARED, FIRED, RESOLVED = "pending", "cleared", "fired", "resolved"


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """An immutable snapshot of an enabled rule, as the evaluator needs it."""

    id: int
    name: str
    kind: str  # threshold | no_data | offline
    key: str
    condition: str  # gt ge lt le outside
    low: float | None
    high: float | None
    duration_ms: int
    hysteresis: float
    no_data_ms: int
    severity: str
    device_id: int | None
    pattern: str
    webhook_url: str
    labels: tuple[tuple[str, str], ...] = ()  # name=value pairs the device must all carry
    # The label scope of the person who made it (accounts/scopes.py): any selector; () = every device.
    scope: tuple[tuple[tuple[str, str], ...], ...] = ()

    def applies_to(self, device_id: int, device_key: str, labels: Mapping[str, str] | None = None) -> bool:
        """Its one device; else every device whose key matches the pattern and that carries the labels."""
        if self.device_id is not None:
            return self.device_id == device_id
        carried = labels or {}
        if self.labels and not all(carried.get(name) == value for name, value in self.labels):
            return False
        if self.scope and not any(all(carried.get(n) == v for n, v in selector) for selector in self.scope):
            return False
        return fnmatchcase(device_key, self.pattern or "*")

    @property
    def limit(self) -> float:
        """The threshold (the band's low edge); every threshold rule has one (alerts/rules.py refuses it missing)."""
        if self.low is None:
            raise ValueError(f"threshold rule {self.name!r} has no threshold")
        return self.low

    @property
    def band_high(self) -> float:
        """The band's high edge of an `outside` rule (alerts/rules.py refuses it missing)."""
        if self.high is None:
            raise ValueError(f"threshold rule {self.name!r} has no high edge for its band")
        return self.high

    def breaks(self, v: float) -> bool:
        match self.condition:
            case "gt":
                return v > self.limit
            case "ge":
                return v >= self.limit
            case "lt":
                return v < self.limit
            case "le":
                return v <= self.limit
            case "outside":
                return v < self.limit or v > self.band_high
        return False

    def clears(self, v: float) -> bool:
        """Back inside the limit by at least the hysteresis."""
        h = self.hysteresis
        match self.condition:
            case "gt":
                return v <= self.limit - h
            case "ge":
                return v < self.limit - h
            case "lt":
                return v >= self.limit + h
            case "le":
                return v > self.limit + h
            case "outside":
                return self.limit + h <= v <= self.band_high - h
        return True


@dataclass(slots=True)
class Tracked:
    state: str = OK
    pending_since: int | None = None  # ms of the first breaking reading of the current span
    last_ts: int = 0  # newest reading evaluated: late readings do not rewind the state


def threshold_step(rule: RuleSpec, tracked: Tracked, ts: int, value: float) -> str | None:
    """Apply one reading (in ts order) to a threshold rule; returns the transition to persist, if any."""
    if ts < tracked.last_ts:
        return None
    tracked.last_ts = ts
    if tracked.state == FIRING:
        if rule.clears(value):
            tracked.state, tracked.pending_since = OK, None
            return RESOLVED
        return None
    if not rule.breaks(value):
        if tracked.state == PENDING:
            tracked.state, tracked.pending_since = OK, None
            return PENDING_CLEARED
        return None
    if tracked.state == OK:
        tracked.state, tracked.pending_since = PENDING, ts
        if rule.duration_ms == 0:
            tracked.state = FIRING
            return FIRED
        return PENDING_STARTED
    if tracked.pending_since is None:  # PENDING always starts with its first breaking reading
        raise ValueError(f"rule {rule.name!r}: a pending alert without the time it started")
    if ts - tracked.pending_since >= rule.duration_ms:
        tracked.state = FIRING
        return FIRED
    return None


def silence_step(rule: RuleSpec, tracked: Tracked, *, last_heard_ms: int, now_ms: int) -> str | None:
    """No-data and offline rules on the timer: fire after `no_data_ms` of silence, resolve when heard."""
    silent = now_ms - last_heard_ms >= rule.no_data_ms
    if silent and tracked.state != FIRING:
        tracked.state = FIRING
        return FIRED
    if not silent and tracked.state == FIRING:
        tracked.state = OK
        return RESOLVED
    return None
