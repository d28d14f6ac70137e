"""Bridge counters: logged as one line every interval, readable by other code (metrics, tests)."""

import time
from collections import Counter
from dataclasses import dataclass, field

Delivery = tuple[int, int]  # (connection generation, packet id): a packet id means something only on its connection


@dataclass
class BridgeStats:
    received: int = 0
    stored: int = 0  # messages whose readings were committed
    rejected: int = 0
    acked: int = 0
    reasons: Counter = field(default_factory=Counter)  # rejection reasons since the last line
    # (device or topic, reason) → [messages, the latest reason's text] since the last report
    refused: dict[tuple[str, str], list] = field(default_factory=dict)
    # QoS 1 messages received and not yet PUBACKed, whatever they wait for (a commit, or nothing: a stall)
    unacked: dict[Delivery, float] = field(default_factory=dict)  # → received at (monotonic)

    @property
    def inflight(self) -> int:
        return len(self.unacked)

    def lag(self) -> float:
        """Seconds since the oldest message not yet acked arrived."""
        return time.monotonic() - min(self.unacked.values()) if self.unacked else 0.0

    def forget_before(self, generation: int) -> None:
        """A new connection: what the old one left unacked is redelivered on it, and counted again then."""
        self.unacked = {d: at for d, at in self.unacked.items() if d[0] >= generation}

    def reject(self, source: str, code: str, text: str) -> None:
        self.rejected += 1
        self.reasons[code] += 1
        entry = self.refused.setdefault((source, code), [0, text])
        entry[0] += 1
        entry[1] = text

    def refusals(self) -> list[str]:
        """One line per (device, reason) refused since the last call, then forgotten."""
        # repr: a topic is the sender's text (a newline in it must not forge a log line)
        lines = [f"bridge: refused {n} message(s) of {source!r}: {code} ({text})" for (source, code), (n, text) in
                 sorted(self.refused.items())]  # fmt: skip
        self.refused.clear()
        return lines

    def line(self) -> str:
        reasons = ", ".join(f"{code}={n}" for code, n in self.reasons.most_common()) or "none"
        return (
            f"bridge: in {self.received}, stored {self.stored}, rejected {self.rejected} ({reasons}), "
            f"acked {self.acked}, inflight {self.inflight}, lag {self.lag():.3f}s"
        )
