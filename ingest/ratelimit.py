"""Per-device rate limit: a token bucket of readings per second, per hub process.

With N hub processes behind a balancer a device may reach N × the limit; that bounds abuse, while the
writer's backpressure still protects the database. 0 turns the limit off (the default).
"""

import time
from collections.abc import Hashable
from dataclasses import dataclass

from ingest.parsing import ErrorCode, IngestError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: `take(device_id, n)` spends n readings from that device's bucket or raises
    IngestError; `delay(key)` is the same test for any key (the API's provisioning attempts per client address)."""

    # Past this many keys, buckets that have refilled are forgotten (they would start full anyway).
    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[Hashable, _Bucket] = {}

    def take(self, device_id: int, readings: int) -> None:
        if readings == 0:
            return
        if wait := self.delay(device_id, readings):
            raise IngestError(
                ErrorCode.RATE_LIMITED,
                f"over {self.rate:g} readings/s for this device; retry in {int(wait * 1000) + 1} ms (not stored)",
            )

    def delay(self, key: Hashable, cost: float = 1.0) -> float:
        """Spend `cost` from `key`'s bucket and return 0, or return the seconds until it could (nothing spent)."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if cost > bucket.tokens:
            return (cost - bucket.tokens) / self.rate
        bucket.tokens -= cost
        return 0.0

    def _forget_full(self, now: float) -> None:
        refill = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < refill}
