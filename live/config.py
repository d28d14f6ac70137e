"""How a process's live fan-out and dashboard streams behave (docs/stream-protocol.md), read once at start-up."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamConfig:
    tick_seconds: float = 0.1  # readings reach a stream at most once per tick (HUB_STREAM_TICK_MS)
    stall_seconds: float = 10.0  # a socket that takes nothing this long while more waits has stopped reading
    max_pending_chars: int = 16 * 1024 * 1024  # what may wait for one stream's socket
    catch_up_limit: int = 20_000  # readings a stream's catch-up (and what it holds meanwhile) carries at most
    catch_up_threads: int = 2  # database threads of the streams' catch-up queries (not Channels' one thread)
    watchdog_seconds: float = 1.0  # how often the channel layer is probed
    rejoin_seconds: float = 60.0  # how often the broadcaster's groups are joined again (core layer's expiry)
    fleet_digest_seconds: float = 1.0  # at most one fleet digest of a process's commits per interval
    scope_refresh_seconds: float = 2.0  # how soon a device that leaves a person's scope leaves their streams
    redis_urls: tuple[str, ...] = ()  # the channel layer's Redis servers (the watchdog asks each for its run id)

    @property
    def stall_check_seconds(self) -> float:
        return min(1.0, self.stall_seconds / 4)
