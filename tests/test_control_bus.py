"""The control bus keeps hearing word while it rejoins its group (on the pub/sub layer, a receive cancelled to rejoin
unsubscribed its channel: every rejoin logged a warning and lost a second of word)."""

import asyncio
import logging
import time

import pytest
from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

from control.bus import ControlBus


def layers(kind: str) -> tuple[object, object]:
    """(the bus's layer, a sender's layer: another process's on Redis)."""
    if kind == "memory":
        layer = InMemoryChannelLayer()
        return layer, layer
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    return RedisPubSubChannelLayer(**config), RedisPubSubChannelLayer(**config)


@pytest.mark.parametrize("kind", ["pubsub", "memory"])
async def test_word_keeps_arriving_across_rejoins(kind, request, caplog):
    if kind == "pubsub":
        request.getfixturevalue("redis")
    layer, sender_layer = layers(kind)
    bus, sender = ControlBus(layer, rejoin_seconds=0.1), ControlBus(sender_layer)
    heard: list[float] = []
    bus.listen("dev-1", lambda message: heard.append(time.monotonic()))
    bus.start()
    caplog.set_level(logging.DEBUG, logger="control.bus")
    try:
        async with asyncio.timeout(5):
            while not heard:  # subscribed
                await sender.tell("dev-1", commands=True)
                await asyncio.sleep(0.02)
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # about 15 rejoins
            await sender.tell("dev-1", commands=True)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
    finally:
        await bus.stop()
        for each in {id(layer): layer, id(sender_layer): sender_layer}.values():
            await each.flush()  # type: ignore[attr-defined]
    during = [t for t in heard if t >= started]
    gaps = [b - a for a, b in zip([started, *during], during, strict=False)]
    assert len(during) > 30, f"only {len(during)} of ~70 words heard while rejoining"
    assert max(gaps) < 0.5, f"no word heard for {max(gaps):.2f} s"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
