"""An after-commit sink for writer tests: what the writer offered, in order, shaped by the test."""

from collections.abc import Callable
from typing import Any

from ingest.commits import Committed


class RecordingSink:
    def __init__(self, shape: Callable[[Committed], Any]) -> None:
        self.offered: list[Any] = []
        self._shape = shape

    def offer(self, committed: Committed) -> None:
        self.offered.append(self._shape(committed))
