"""Word between hub processes about devices' attributes and commands, over the channel layer (Redis across
processes; in memory on the embedded default): "device KEY has something new" reaches the process holding its
connection or long-poll, "command N has ended" reaches the process whose caller waits for it. The database is
the record; these are only wake-ups: a lost one delays a command until the device reconnects or polls again,
never loses it (and the maintenance sweep ends what passes its deadline)."""

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

GROUP = "hub.control"
Listener = Callable[[dict[str, Any]], None]
_REJOIN_SECONDS = 600.0  # the layer forgets group members after a day (channels-redis group_expiry)


class ControlBus:
    """This process's end of the word: listeners per device key, waiters per command id."""

    def __init__(self, layer, *, rejoin_seconds: float = _REJOIN_SECONDS) -> None:
        self._layer = layer
        self._rejoin_seconds = rejoin_seconds
        self._listeners: defaultdict[str, set[Listener]] = defaultdict(set)
        self._everyone: set[Listener] = set()  # listeners of every device (an MQTT bridge worker)
        self._waiters: defaultdict[int, set[asyncio.Future[None]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        # Devices that may have open commands: those the database had at start, and every one word came for since.
        # A device that connects asks the database for its commands only if it is here, so the many that never
        # get any cost no query (and no memory) when they connect.
        self.pending: set[str] = set()

    def start(self, pending: Iterable[str] = ()) -> None:
        self.pending.update(pending)
        self._task = asyncio.get_running_loop().create_task(self._receiving(), name="hub-control-bus")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Bounded: a cancelled receive of the pub/sub layer unsubscribes from Redis first, which waits on Redis.
            await asyncio.wait([self._task], timeout=2.0)

    def listen(self, key: str, listener: Listener) -> None:
        self._listeners[key].add(listener)

    def listen_all(self, listener: Listener) -> None:
        self._everyone.add(listener)

    def unlisten(self, key: str, listener: Listener) -> None:
        listeners = self._listeners.get(key)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[key]

    def listening(self, key: str) -> int:
        return len(self._listeners.get(key, ()))

    async def tell(self, key: str, **news: Any) -> None:
        """Tell whoever holds device `key` (here or in another process): `news` is `commands=True` or
        `attributes={...}, deleted=[...]`."""
        await self._send({"type": "control.device", "device": key, **news})

    async def ended(self, command_id: int) -> None:
        await self._send({"type": "control.ended", "command": command_id})

    def expect(self, command_id: int) -> asyncio.Future[None]:
        """A future done when word comes that the command ended; register it before the word can come, and
        `forget` it after."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[command_id].add(waiter)
        return waiter

    def forget(self, command_id: int, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(command_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[command_id]

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._layer.group_send(GROUP, message)
        except Exception:
            # The layer away: the record is in the database; the device gets it when it reconnects or polls.
            logger.warning("control: word of %s not sent (channel layer unavailable)", message["type"], exc_info=True)
            self._dispatch(message)  # this process at least

    async def _receiving(self) -> None:
        while True:
            rejoining = None
            try:
                # The default prefix, as the broadcaster's: the core layer reads one prefix per process.
                channel = await self._layer.new_channel()
                await self._layer.group_add(GROUP, channel)
                rejoining = asyncio.create_task(self._rejoining(channel), name="hub-control-rejoin")
                while True:
                    self._dispatch(await self._layer.receive(channel))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("control: channel layer unavailable; retrying", exc_info=True)
                await asyncio.sleep(1.0)
            finally:
                if rejoining is not None:
                    rejoining.cancel()

    async def _rejoining(self, channel: str) -> None:
        """Join the group again now and then, beside the receive: a cancelled receive would make the pub/sub layer
        drop the channel (it unsubscribes), and word sent meanwhile would be lost."""
        while True:
            await asyncio.sleep(self._rejoin_seconds)
            try:
                await self._layer.group_add(GROUP, channel)
            except Exception:  # the receive meets the same outage and starts over
                logger.debug("control: rejoining the group failed", exc_info=True)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") == "control.device":
            if message.get("commands"):
                self.pending.add(message.get("device", ""))
            for listener in [*self._listeners.get(message.get("device", ""), ()), *self._everyone]:
                try:
                    listener(message)
                except Exception:
                    logger.exception("control: a listener of %s failed", message.get("device"))
        elif message.get("type") == "control.ended":
            for waiter in list(self._waiters.get(message.get("command", -1), ())):
                if not waiter.done():
                    waiter.set_result(None)
