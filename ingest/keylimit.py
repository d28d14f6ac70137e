"""The distinct keys of each device, bounded: HUB_MAX_KEYS_PER_DEVICE (issue 17: a device inventing 1,000 new keys
per message grew the fleet page twentyfold and made its history pages take seconds).

Per hub process: the keys a device has stored (read once, on its first message here) and those this process has
queued since. A message naming a new key beyond the budget is refused as a whole (`too_many_keys`). Processes
do not share what they queued, so N processes may admit up to N × the new keys of one message each beyond the
limit at the same instant; the next message anywhere sees them stored.
"""

from collections.abc import Awaitable, Callable, Sequence

from ingest.parsing import ErrorCode, IngestError, Reading

KeysOf = Callable[[int], Awaitable[list[str]]]


class KeyBudget:
    """`check(device_id, readings)` or IngestError(too_many_keys), then `admit` what an accepted message added;
    0 turns the limit off."""

    def __init__(self, limit: int, keys_of: KeysOf) -> None:
        self.limit = limit
        self._keys_of = keys_of
        self._known: dict[int, set[str]] = {}

    async def check(self, device_id: int, readings: Sequence[Reading]) -> set[str]:
        """The keys of `readings` new to the device; raises IngestError when they would pass the budget. Counts
        nothing: a message refused later (its rate) must not use up keys it never stored."""
        if self.limit <= 0:
            return set()
        known = self._known.get(device_id)
        if known is None:
            stored = set(await self._keys_of(device_id))
            known = self._known.setdefault(device_id, stored)  # another message may have loaded it meanwhile
        new = {r.key for r in readings if r.key not in known}
        if new and len(known) + len(new) > self.limit:
            key = next(r.key for r in readings if r.key in new)
            raise IngestError(
                ErrorCode.TOO_MANY_KEYS,
                f"the device has {len(known)} keys and may have at most {self.limit}: {key!r} would be a new one",
                key=key,
            )
        return new

    def admit(self, device_id: int, new: set[str]) -> None:
        """The message that brought `new` keys was accepted: they count from now on."""
        if new:
            self._known.setdefault(device_id, set()).update(new)
