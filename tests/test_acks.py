"""Cumulative acks: in order, coalesced over what is already committed, never waiting for a later commit."""

import asyncio

from ingest.parsing import ErrorCode, IngestError
from tests.waiting import eventually
from transports.acks import AckSequencer


async def sequencer(max_inflight: int = 100) -> tuple[AckSequencer, list[dict], list[BaseException]]:
    sent: list[dict] = []
    failures: list[BaseException] = []

    async def send(payload: dict) -> None:
        sent.append(payload)

    async def on_failure(exc: BaseException) -> None:
        failures.append(exc)

    return AckSequencer(send, on_failure, max_inflight=max_inflight), sent, failures


async def settle() -> None:
    """For negative checks only: a few turns of the event loop, in which the sequencer (no I/O) does all it can."""
    for _ in range(5):
        await asyncio.sleep(0)  # one turn of the loop (negative checks only)


async def test_a_committed_frame_is_acked_while_later_frames_still_wait_for_their_commit():
    acks, sent, _ = await sequencer()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    await acks.committed_later(1, first)
    await acks.committed_later(2, second)
    first.set_result(None)
    await eventually(lambda: len(sent) == 1, what="the ack of frame 1")
    assert sent == [{"ack": 1}], "frame 1 is acked although frame 2 is still in flight"
    second.set_result(None)
    await eventually(lambda: len(sent) == 2, what="the ack of frame 2")
    assert sent == [{"ack": 1}, {"ack": 2}]
    await acks.close()


async def test_frames_committed_together_get_one_ack_and_errors_come_before_the_ack_covering_them():
    acks, sent, _ = await sequencer()
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    await acks.committed_later(1, futures[0])
    await acks.rejected(2, IngestError(ErrorCode.MALFORMED_JSON, "bad"))
    await acks.committed_later(3, futures[1])
    await acks.committed_later(4, futures[2])
    for future in futures:
        future.set_result(None)
    await eventually(lambda: {"ack": 4} in sent, what="the ack covering frame 4")
    assert sent[0]["error"]["frame"] == 2
    assert sent[1:] == [{"ack": 4}], "one ack for everything already handled"
    await acks.close()


async def test_a_frame_the_database_refuses_gets_an_error_frame_and_the_socket_goes_on():
    """A commit future failing with an IngestError (the writer isolated a value the database refuses) is a
    final answer for that frame: an error frame, then the ack covering it; no failure, no close."""
    acks, sent, failures = await sequencer()
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    for frame, future in enumerate(futures, 1):
        await acks.committed_later(frame, future)
    futures[1].set_exception(IngestError(ErrorCode.UNSTORABLE_VALUE, "the database cannot store this message"))
    futures[0].set_result(None)
    futures[2].set_result(None)
    await eventually(lambda: {"ack": 3} in sent, what="the ack covering frame 3")
    assert sent[0]["error"] == {
        "frame": 2,
        "code": "unstorable_value",
        "message": "the database cannot store this message",
    }
    assert failures == []
    await acks.close()


async def test_a_failed_commit_is_never_acked_and_reported_once():
    acks, sent, failures = await sequencer()
    loop = asyncio.get_running_loop()
    ok, failed = loop.create_future(), loop.create_future()
    await acks.committed_later(1, ok)
    await acks.committed_later(2, failed)
    ok.set_result(None)
    failed.set_exception(RuntimeError("database said no"))
    await eventually(lambda: bool(failures), what="the failure to be reported")
    assert sent == [{"ack": 1}] and [str(f) for f in failures] == ["database said no"]
    await acks.close()


async def test_too_many_frames_in_flight_make_the_reader_wait():
    acks, _, _ = await sequencer(max_inflight=2)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(4)]
    await acks.committed_later(1, futures[0])
    await acks.committed_later(2, futures[1])
    await acks.committed_later(3, futures[2])  # frame 1 was taken by the sequencer: a slot is free
    third = asyncio.create_task(acks.committed_later(4, futures[3]))
    await settle()  # a negative check: `third` had its turns
    assert not third.done(), "backpressure: the socket is not read while frames pile up"
    futures[0].set_result(None)
    await eventually(third.done, what="a slot for frame 4")
    assert third.done()
    await acks.close()


async def test_a_quiet_socket_holds_no_task_and_acks_again_when_frames_resume():
    """The sequencer's task and queue go after `linger` without frames (memory of idle sockets), and come back."""
    sent: list[dict] = []

    async def send(payload: dict) -> None:
        sent.append(payload)

    async def on_failure(exc: BaseException) -> None:
        raise AssertionError(exc)

    acks = AckSequencer(send, on_failure, max_inflight=4, linger=0.05)
    loop = asyncio.get_running_loop()
    for frame in (1, 2):
        committed = loop.create_future()
        committed.set_result(None)
        await acks.committed_later(frame, committed)
    await eventually(lambda: sent == [{"ack": 2}], what="the ack of frames 1 and 2")
    await eventually(lambda: acks._task is None, what="the idle sequencer letting its task go")
    assert acks._entries is None
    later = loop.create_future()
    await acks.committed_later(3, later)
    assert acks._task is not None
    later.set_result(None)
    await eventually(lambda: sent == [{"ack": 2}, {"ack": 3}], what="the ack of frame 3 after the pause")
    await acks.close()
