"""Reads that cannot crowd out the devices (docs/history.md, "Bounded answers"; docs/reliability.md).

Every history answer is bounded (history/answers.py). A heavy read (a CSV export, or a JSON answer that may hold more
than `light_points`) is also admitted by `ReadAdmission`: at most `per_client` at a time per operator or API token
and `per_process` in all; past either the answer is 429 with Retry-After, at once (a read waits for no slot: a queue
would hold the request's memory and its client). The slot is held until the answer is sent whole, so a stream that
its client reads slowly counts until it ends. Database statements of a read stop after `timeout_seconds`.
"""

import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from core.state import runtime_in
from storage.engine import Reads


@dataclass(frozen=True, slots=True)
class ReadConfig:
    """The bounds of reads (HUB_HISTORY_MAX_POINTS, HUB_HISTORY_CSV_MAX_ROWS, HUB_READS_*, HUB_READ_TIMEOUT_SECONDS)."""

    max_points: int = 100_000  # points (or CSV rows per key: csv_rows) in one answer, across its keys
    csv_rows: int = 10_000_000  # rows of one CSV export, across its keys
    light_points: int = 20_000  # an answer that can hold no more is not admitted: it is cheaper than counting it
    per_client: int = 2  # heavy reads one operator or token may have in flight
    per_process: int = 1  # heavy reads one hub process serves at a time (the setting's default: half the CPUs)
    timeout_seconds: float = 30.0  # a read's database statement (PostgreSQL statement_timeout)


class ReadsFull(Exception):
    """No slot for this read now; `retry_after` seconds is a fair wait: a heavy read takes seconds (0.4-5 s in
    bench/reads.py), and asking again sooner mostly costs the hub another refusal (~9 ms of its CPU each; at 1 s,
    16 readers' refusals alone took a device's ack p99 from 1.4x to 2.5x alone)."""

    def __init__(self, message: str, retry_after: int = 3) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Admitted:
    """A heavy read's slot; `release()` (idempotent) gives it back."""

    def __init__(self, admission: "ReadAdmission", client: Hashable) -> None:
        self._admission = admission
        self._client: Hashable | None = client

    def release(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._admission._release(client)


class ReadAdmission:
    """Heavy reads in flight, per client and in all. Thread-safe: JSON reads run on Django's sync thread, CSV
    streams end on the event loop."""

    def __init__(self, *, per_client: int, per_process: int) -> None:
        self.per_client = per_client
        self.per_process = per_process
        self._lock = threading.Lock()
        self._by_client: dict[Hashable, int] = {}
        self._total = 0

    def admit(self, client: Hashable) -> Admitted:
        """A slot for `client`, or ReadsFull naming which bound is reached."""
        with self._lock:
            if self._total >= self.per_process:
                raise ReadsFull(f"this hub process is serving {self._total} heavy reads; retry shortly")
            held = self._by_client.get(client, 0)
            if held >= self.per_client:
                raise ReadsFull(f"you have {held} heavy reads in flight (at most {self.per_client}); retry shortly")
            self._by_client[client] = held + 1
            self._total += 1
        return Admitted(self, client)

    def _release(self, client: Hashable) -> None:
        with self._lock:
            self._total -= 1
            held = self._by_client.pop(client, 1) - 1
            if held:
                self._by_client[client] = held

    @property
    def in_flight(self) -> int:
        return self._total


@dataclass(frozen=True, slots=True)
class HistoryReads:
    """What the history endpoints of a process share: the bounds, the admission, the streaming reads."""

    config: ReadConfig
    admission: ReadAdmission
    stream: Reads  # the storage engine's streaming reads (CSV export), on connections of their own


def history_in(scope: Mapping[str, Any]) -> HistoryReads:
    """This process's `HistoryReads`, from the connection's scope (core/state.py)."""
    reads: HistoryReads = runtime_in(scope).history
    return reads
