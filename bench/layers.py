"""Channel layers for the hub's fan-out: `pubsub` (RedisPubSubChannelLayer) vs `core` (RedisChannelLayer),
measured in the same run on the same Redis with the hub's message shape.

    .venv/bin/python bench/layers.py                        # 100 devices x 300 flushes x 20 readings
    .venv/bin/python bench/layers.py --devices 1000 --flushes 50

A publisher process does what the writer's fan-out does after each commit (ingest/fanout.py): one
`readings.batch` message per device, all devices' group_sends gathered, flush after flush, as fast as it can.
This process holds one channel per device in that device's group (one dashboard each, as a hub process
serving dashboards does) and counts what arrives. Prints messages delivered vs sent and the rates.
End to end through the hub: `bench/ingest.py --layer both`.
"""

import argparse
import asyncio
import multiprocessing
import os
import time

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from harness import console, table

from core.epoch import now_ms

# The hub's HUB_CHANNEL_LAYER values and their settings (hub/settings.py, defaults of HUB_CHANNEL_CAPACITY
# and HUB_GROUP_EXPIRY): the publisher's `capacity` is what drops messages to a slow reader of `core`.
LAYERS = {
    "pubsub": lambda hosts, prefix: RedisPubSubChannelLayer(hosts=hosts, prefix=prefix),
    "core": lambda hosts, prefix: RedisChannelLayer(hosts=hosts, prefix=prefix, capacity=1000, group_expiry=86400),
}


def layer_for(kind: str, redis_url: str, prefix: str) -> RedisChannelLayer | RedisPubSubChannelLayer:
    """The layer a hub with HUB_CHANNEL_LAYER=kind, HUB_REDIS_URL=redis_url, HUB_CHANNEL_PREFIX=prefix uses."""
    return LAYERS[kind]([redis_url], prefix)


async def _publish(kind: str, args: argparse.Namespace, prefix: str) -> tuple[int, float]:
    layer = layer_for(kind, args.redis_url, prefix)
    keys = [f"d{i}" for i in range(args.devices)]
    ts = now_ms()
    started, wall = time.perf_counter(), time.time()
    for flush in range(args.flushes):
        readings = [[ts + flush * args.readings + i, "t", float(i)] for i in range(args.readings)]
        await asyncio.gather(
            *(
                layer.group_send(f"device.{key}", {"type": "readings.batch", "device": key, "readings": readings})
                for key in keys
            )
        )
    seconds = time.perf_counter() - started
    await layer.flush()
    return args.devices * args.flushes, seconds, wall


def publisher(kind: str, args: argparse.Namespace, prefix: str, answer: "multiprocessing.Queue") -> None:
    answer.put(asyncio.run(_publish(kind, args, prefix)))


async def measure(kind: str, args: argparse.Namespace) -> list[object]:
    prefix = f"benchlayers{os.getpid()}{kind}"
    layer = layer_for(kind, args.redis_url, prefix)
    received = [0, 0.0]

    async def receive(channel: str) -> None:
        while True:
            await layer.receive(channel)
            received[0] += 1
            received[1] = time.time()  # wall clock: compared with the publisher process's start

    tasks = []
    for i in range(args.devices):
        channel = await layer.new_channel()
        await layer.group_add(f"device.d{i}", channel)
        tasks.append(asyncio.create_task(receive(channel)))
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited event loop or sockets
    answer = spawn.Queue()
    process = spawn.Process(target=publisher, args=(kind, args, prefix, answer))
    process.start()
    sent, publish_seconds, started = await asyncio.to_thread(answer.get)
    await asyncio.to_thread(process.join)
    deadline = time.monotonic() + 10
    while received[0] < sent and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded wait for the tail
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await layer.flush()
    delivered, last = received
    seconds = max(last - started, 1e-9)
    return [
        kind,
        f"{sent:,}",
        f"{delivered:,} ({delivered / sent:.1%})",
        f"{sent / publish_seconds:,.0f}",
        f"{delivered / seconds:,.0f}",
        f"{delivered * args.readings / seconds:,.0f}",
    ]


async def run(args: argparse.Namespace) -> None:
    console.print(
        f"layers bench: {args.devices} devices (one subscriber channel each) x {args.flushes} flushes"
        f" x {args.readings} readings per message"
    )
    rows = [await measure(kind, args) for kind in args.kinds]
    columns = ["layer", "messages sent", "delivered", "sent/s", "delivered/s", "readings/s delivered"]
    table("Fan-out through the channel layer", columns, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--flushes", type=int, default=300)
    parser.add_argument("--readings", type=int, default=20, help="readings per message")
    parser.add_argument("--layers", default="pubsub,core")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args()
    args.kinds = args.layers.split(",")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
