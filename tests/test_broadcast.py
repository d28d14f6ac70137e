"""The live fan-out's parts on their own: a device's readings encoded once per tick whatever the number of
streams, a busy stream's readings merged (never dropped) into bounded messages, a stalled one closed."""

import asyncio

import orjson
from channels.layers import InMemoryChannelLayer

from core.protocol import ReadingsBatch, device_group
from live.broadcast import MESSAGE_CHARS, Broadcaster, Outbox, Readings, TickSchedule, readings_message
from tests.waiting import eventually


class Sink:
    """A stream as the broadcaster sees it: records what it is handed."""

    def __init__(self, outbox: Outbox | None = None, visible: frozenset[str] | None = None) -> None:
        self.outbox = outbox
        self.visible = visible
        self.fragments: list[str] = []
        self.messages: list[str] = []
        self.closed_with: int | None = None

    def take_readings(self, batch: Readings) -> None:
        self.fragments.append(batch.fragment)

    def take_message(self, text: str) -> None:
        self.messages.append(text)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed_with = code


async def test_a_tick_encodes_a_devices_readings_once_for_all_its_streams():
    layer = InMemoryChannelLayer()
    broadcaster = Broadcaster(layer, tick_seconds=0.05)
    await broadcaster.start()
    streams = [Sink() for _ in range(3)]
    other = Sink()
    for stream in streams:
        await broadcaster.follow(stream, device_group("a"))
    await broadcaster.follow(other, device_group("b"))
    for n in range(3):  # three flushes arriving within one tick
        batch = ReadingsBatch(type="readings.batch", device="a", at=0, readings=[[1000 + n, "t", float(n)]])
        await layer.group_send(device_group("a"), batch)

    def handed() -> list:
        return [orjson.loads("[" + f + "]") for f in streams[0].fragments]

    await eventually(lambda: sum(map(len, handed())) == 3, what="the ticks")
    # The first flush goes out at once; what arrives during the tick that follows waits for the next one.
    assert len(streams[0].fragments) <= 2
    assert [r for fragment in handed() for r in fragment] == [[1000, "t", 0.0], [1001, "t", 1.0], [1002, "t", 2.0]]
    for i, fragment in enumerate(streams[0].fragments):
        assert streams[1].fragments[i] is fragment and streams[2].fragments[i] is fragment, "encoded once, shared"
    assert other.fragments == []
    await broadcaster.unfollow(other)
    await broadcaster.close()


async def test_a_busy_stream_gets_its_readings_merged_in_bounded_messages():
    sent: list[str] = []
    release = asyncio.Event()

    async def send(text: str) -> None:
        await release.wait()
        sent.append(text)

    outbox = Outbox(send, lambda: None, max_chars=10 * MESSAGE_CHARS, stall=60)
    outbox.add('{"type":"history"}')  # goes out first, and the socket is slow to take it
    fragment = orjson.dumps([[i, "k", i * 0.5] for i in range(4000)]).decode()[1:-1]  # ~70 KB
    for _ in range(8):
        outbox.add(fragment, fragment=True)
    release.set()
    await eventually(lambda: sum(text.count('"k"') for text in sent) == 32_000, what="every reading sent")
    assert sent[0] == '{"type":"history"}'
    readings = [orjson.loads(text) for text in sent[1:]]
    assert 1 < len(readings) < 8, "merged into fewer messages than fragments, each under the bound"
    assert all(len(text) <= MESSAGE_CHARS for text in sent[1:])
    assert [r[0] for message in readings for r in message["readings"]] == list(range(4000)) * 8, "in order"


async def test_an_idle_outbox_writes_the_shared_frame_and_a_busy_or_full_one_queues_in_order():
    """Readings that find the outbox idle go out as the frame built once for every stream; behind a message still
    being sent, or when the socket's buffer is full (the server refuses the frame), they queue and go in order."""
    written: list[bytes] = []
    sent: list[str] = []
    release = asyncio.Event()
    room = [True]

    def write_frame(frame: bytes) -> bool:
        if room[0]:
            written.append(frame)
        return room[0]

    async def send(text: str) -> None:
        await release.wait()
        sent.append(text)

    outbox = Outbox(send, lambda: None, max_chars=1 << 20, stall=60, write_frame=write_frame)
    first, second, third = (Readings([[n, "k", float(n)]]) for n in range(3))
    outbox.add_readings(first)
    assert written == [first.frame()] and sent == []
    payload = readings_message(first.fragment).encode()
    assert first.frame() == b"\x81" + bytes([len(payload)]) + payload, "an unmasked text frame of the message"
    assert first.frame() is first.frame(), "framed once, however many streams write it"
    outbox.add('{"type":"history"}')  # a message of its own: through the protocol, and slow to go
    outbox.add_readings(second)  # behind it: queued, not written ahead of it
    release.set()
    await eventually(lambda: len(sent) == 2, what="the queued messages")
    assert sent == ['{"type":"history"}', readings_message(second.fragment)]
    room[0] = False  # the socket's buffer is full: the frame is refused and the message goes the slow way
    outbox.add_readings(third)
    await eventually(lambda: len(sent) == 3, what="the refused frame's message")
    assert sent[2] == readings_message(third.fragment) and len(written) == 1


async def test_a_stream_whose_socket_takes_nothing_is_given_up():
    overflowed = asyncio.Event()

    async def never(text: str) -> None:
        await asyncio.Event().wait()

    loop = asyncio.get_running_loop()
    outbox = Outbox(never, overflowed.set, max_chars=1 << 20, stall=0.2)
    outbox.add("x")
    await asyncio.sleep(0.05)
    assert not outbox.stalled(loop.time()), "sending for less than its stall time"
    await asyncio.sleep(0.25)
    assert outbox.stalled(loop.time())
    assert overflowed.is_set()
    assert outbox.closed
    outbox.add("y")  # a closed outbox takes nothing more


async def test_the_broadcaster_gives_up_a_followed_stream_whose_socket_takes_nothing():
    """One sweep a second over the streams (not a timer per send) finds the stalled one; the others stay."""

    async def never(text: str) -> None:
        await asyncio.Event().wait()

    async def instant(text: str) -> None:
        pass

    broadcaster = Broadcaster(InMemoryChannelLayer(), tick_seconds=0.05, stall_check_seconds=0.05)
    await broadcaster.start()
    stalled, wrongly_closed = asyncio.Event(), asyncio.Event()
    deaf = Sink(Outbox(never, stalled.set, max_chars=1 << 20, stall=0.2))
    live = Sink(Outbox(instant, wrongly_closed.set, max_chars=1 << 20, stall=0.2))
    for stream in (deaf, live):
        await broadcaster.follow(stream, device_group("a"))
        stream.outbox.add("x")
    await asyncio.wait_for(stalled.wait(), 5)
    assert deaf.outbox.closed
    assert not live.outbox.closed and not wrongly_closed.is_set()
    await broadcaster.close()


def test_each_device_is_handed_out_at_most_once_a_tick_in_its_own_slot():
    """Readings every 5 ms from many devices for 2 s (the loop's clock given, not waited for): an idle device
    goes out at once, then each device once a tick at its own phase, every reading in order; the devices'
    hand-outs spread over the tick instead of one burst."""
    schedule = TickSchedule(0.1)
    keys = [f"dev-{i}" for i in range(40)]
    handed: dict[str, list[tuple[float, list]]] = {key: [] for key in keys}
    step, now = 0.005, 1000.0
    assert schedule.add("dev-0", [[0, "t", 0.0]], 0, now), "an idle device is due at once"
    for n in range(1, 400):
        for key in keys[1:] if n == 1 else keys:
            schedule.add(key, [[n, "t", float(n)]], 0, now)
        for key, readings in schedule.take(now).items():
            handed[key].append((now, readings))
        now += step
    for key, readings in schedule.take(now + 1.0).items():
        handed[key].append((now + 1.0, readings))
    assert not schedule.waiting()
    for key in keys:
        assert sum(len(r) for _, r in handed[key]) == 399, "every reading, once"
        times = [at for at, _ in handed[key]][:-1]
        gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]  # after settling into its slot
        assert gaps and all(abs(gap - 0.1) < 1e-6 for gap in gaps), f"{key}: once a tick, {gaps[:5]}"
        assert times[1] - times[0] >= 0.05 - 1e-9, "never sooner than half a tick after the previous"
        sent = [r[0] for _, readings in handed[key] for r in readings]
        assert sent == sorted(sent) and len(sent) == len(set(sent)), "in order, once"
    phases = {round((handed[key][-2][0] * 1000) % 100) for key in keys}
    assert len(phases) >= 5, f"the devices' hand-outs fall in several slots of the tick: {sorted(phases)}"
