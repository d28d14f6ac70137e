"""The fan-out's batch publish against real Redis: one pipeline per shard on the pub/sub layer, the same
delivery as group_send, and a plain group_send per message when the layer's internals are not there."""

import asyncio
import logging
from types import SimpleNamespace

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

from live.publisher import GroupSender, _PubSubPipeline
from tests.waiting import group_ready

pytestmark = pytest.mark.usefixtures("redis")


def layer_of_another_process() -> RedisPubSubChannelLayer:
    return RedisPubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])


async def members(layer, groups: list[str]) -> dict[str, str]:
    """One channel in each group, as a dashboard consumer has, each subscribed (probed) before it returns."""
    channels = {}
    for group in groups:
        channels[group] = await layer.new_channel()
        await layer.group_add(group, channels[group])
        await group_ready(layer, group, channels[group])
    return channels


async def received(layer, channel: str, count: int) -> list[dict]:
    async with asyncio.timeout(10):
        return [await layer.receive(channel) for _ in range(count)]


async def test_the_pubsub_internals_the_pipeline_uses_are_still_there():
    """channels-redis' internals the batch publish relies on exist: an upgrade that renames them fails here,
    loudly, instead of silently falling back to a round trip per device."""
    layer = get_channel_layer()
    assert isinstance(layer, RedisPubSubChannelLayer), "the suite's layer is the pub/sub layer (HUB_CHANNEL_LAYER)"
    _PubSubPipeline.check(layer._get_layer())
    assert _PubSubPipeline.of(layer) is not None


async def test_a_flush_of_many_groups_is_published_in_one_pipeline_and_delivered_in_order(monkeypatch):
    """Every group's members get that group's messages, in order, exactly as from group_send, and no message
    goes through the per-message publish."""
    sender, listener = get_channel_layer(), layer_of_another_process()
    groups = [f"device.fanout-{i}" for i in range(20)]
    channels = await members(listener, groups)
    for shard in sender._get_layer()._shards:
        monkeypatch.setattr(shard, "publish", pytest.fail)
    for n in range(3):
        failed, error = await GroupSender(sender).send_many([(g, {"type": "readings.batch", "n": n}) for g in groups])
        assert (failed, error) == (0, None)
    for group in groups:
        assert [m["n"] for m in await received(listener, channels[group], 3)] == [0, 1, 2]
    await listener.flush()


async def test_without_the_internals_each_message_goes_through_group_send(caplog):
    """A layer that is not the pub/sub layer, or whose internals changed, gets one group_send per message."""

    class Renamed(RedisPubSubChannelLayer):
        """channels-redis after a refactoring: group_send still works, the internals are gone."""

        def _get_layer(self):
            return SimpleNamespace(group_send=super()._get_layer().group_send)

    listener = layer_of_another_process()
    channels = await members(listener, ["device.renamed"])
    renamed = Renamed(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    with caplog.at_level(logging.WARNING, logger="live.publisher"):
        assert await GroupSender(renamed).send_many([("device.renamed", {"type": "t", "n": 1})]) == (0, None)
    assert "internals changed" in caplog.text
    assert await received(listener, channels["device.renamed"], 1) == [{"type": "t", "n": 1}]
    await listener.flush()
    await RedisPubSubChannelLayer._get_layer(renamed).flush()

    memory = InMemoryChannelLayer()
    channels = await members(memory, ["device.memory"])
    assert await GroupSender(memory).send_many([("device.memory", {"type": "t", "n": 2})]) == (0, None)
    assert await received(memory, channels["device.memory"], 1) == [{"type": "t", "n": 2}]
