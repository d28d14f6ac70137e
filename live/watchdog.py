"""No dashboard stream stays open and deaf: a per-process watchdog over the channel layer.

The channel layer is best effort. When Redis restarts, channels-redis' pub/sub layer resubscribes by
itself but the messages published meanwhile are gone, and the core layer forgets every group member. So
every HUB_STREAM_WATCHDOG_SECONDS the watchdog asks each Redis server for its run id (a restart changes
it) and sends itself a message through the layer. When either fails, live messages may have been lost:
every open stream of this process is closed with 4011, and its browser reconnects with `since` and
catches up from the database (docs/stream-protocol.md). Every HUB_STREAM_REJOIN_SECONDS it also joins the
broadcaster's groups again, because the core layer drops members after `group_expiry`.
"""

import asyncio
import contextlib
import logging

import redis.asyncio as redis
from channels.layers import BaseChannelLayer

from live.broadcast import Broadcaster
from live.config import StreamConfig

logger = logging.getLogger(__name__)


class LayerProbe:
    """One heartbeat: every Redis server answers with the run id it had before, and a message sent to
    ourselves through the layer comes back."""

    def __init__(self, layer: BaseChannelLayer, redis_urls: tuple[str, ...], timeout: float) -> None:
        self._layer = layer
        self._timeout = timeout
        self._clients = [redis.Redis.from_url(url, socket_timeout=timeout) for url in redis_urls]
        self._run_ids: list[str | None] = [None] * len(self._clients)
        self._channel: str | None = None
        self._sequence = 0

    async def healthy(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                same_servers = await self._same_servers()
                await self._round_trip()
        except Exception as exc:  # unreachable, timed out, or the layer refused: all mean "maybe lost"
            logger.debug("channel layer probe failed: %r", exc)
            self._channel = None  # a timed-out receive may have dropped the probe channel
            return False
        return same_servers

    async def _same_servers(self) -> bool:
        same = True
        for i, client in enumerate(self._clients):
            run_id = (await client.info("server"))["run_id"]
            if self._run_ids[i] not in (None, run_id):
                same = False
            self._run_ids[i] = run_id
        return same

    async def _round_trip(self) -> None:
        """Returns once our message came back through the layer; raises (or times out) otherwise."""
        layer = self._layer
        if self._channel is None:
            self._channel = await layer.new_channel()
        self._sequence += 1
        await layer.send(self._channel, {"type": "watchdog.ping", "sequence": self._sequence})
        while (await layer.receive(self._channel))["sequence"] != self._sequence:
            pass  # a late answer to an earlier probe

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


async def layer_watchdog(streams: Broadcaster, layer: BaseChannelLayer | None, config: StreamConfig) -> None:
    """Run for the life of the process (a loop of the hub runtime). Without Redis (the in-memory layer) nothing is
    ever lost: the watchdog only rejoins."""
    interval = config.watchdog_seconds
    probe = None
    if config.redis_urls and layer is not None:
        probe = LayerProbe(layer, config.redis_urls, timeout=max(5.0, interval * 3))
    loop = asyncio.get_running_loop()
    rejoined = loop.time()
    was_healthy = True
    try:
        while True:
            await asyncio.sleep(interval)
            healthy = probe is None or await probe.healthy()
            if not healthy:
                closed = await streams.interrupt()
                if was_healthy or closed:
                    logger.warning("channel layer interrupted; closed %d dashboard streams to catch up", closed)
            elif not was_healthy:
                logger.info("channel layer healthy again")
            was_healthy = healthy
            if healthy and loop.time() - rejoined >= config.rejoin_seconds:
                with contextlib.suppress(Exception):
                    await streams.rejoin()
                rejoined = loop.time()
    finally:
        if probe is not None:
            await probe.close()
