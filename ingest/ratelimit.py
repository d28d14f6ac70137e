"""Per-device rate limit: a token bucket of readings per second, per hub process.

With N hub processes behind a balancer a device may reach N × the limit; that bounds abuse, while the
writer's backpressure still protects the database. 0 turns the limit off (the default).
"""

import time
from dataclasses import dataclass

from django.conf import settings

from ingest.parsing import ErrorCode, IngestError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`take(device_id, n)` spends n readings from that device's bucket or raises IngestError."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[int, _Bucket] = {}

    @classmethod
    def from_settings(cls) -> "RateLimiter":
        rate = settings.HUB_DEVICE_RATE_LIMIT
        return cls(rate, settings.HUB_DEVICE_RATE_BURST or 2 * rate)

    def take(self, device_id: int, readings: int) -> None:
        if self.rate <= 0 or readings == 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(device_id)
        if bucket is None:
            bucket = self._buckets[device_id] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if readings > bucket.tokens:
            wait_ms = int((readings - bucket.tokens) / self.rate * 1000) + 1
            raise IngestError(
                ErrorCode.RATE_LIMITED,
                f"over {self.rate:g} readings/s for this device; retry in {wait_ms} ms (not stored)",
            )
        bucket.tokens -= readings
