"""Bridge counters: logged as one line every interval, readable by other code (metrics, tests)."""

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class BridgeStats:
    received: int = 0
    stored: int = 0  # messages whose readings were committed
    rejected: int = 0
    acked: int = 0
    inflight: int = 0
    reasons: Counter = field(default_factory=Counter)  # rejection reasons since the last line
    oldest_inflight: dict[int, float] = field(default_factory=dict)  # mid → received at (monotonic)

    def lag(self) -> float:
        """Seconds since the oldest message not yet acked arrived."""
        return time.monotonic() - min(self.oldest_inflight.values()) if self.oldest_inflight else 0.0

    def line(self) -> str:
        reasons = ", ".join(f"{code}={n}" for code, n in self.reasons.most_common()) or "none"
        return (
            f"bridge: in {self.received}, stored {self.stored}, rejected {self.rejected} ({reasons}), "
            f"acked {self.acked}, inflight {self.inflight}, lag {self.lag():.3f}s"
        )
