"""A2A's per-task frame queue is bounded in bytes like an SSE response (docs/EDGES.md "Limits"):
a client that reads slower than the session streams ends its task with `SLOW_CONSUMER` instead
of piling the session's frames up in the gateway."""

from __future__ import annotations

import pytest

pytest.importorskip("a2a")

from diminuendo.edges.a2a_executor import FrameQueue
from diminuendo.sessions.stream import Frame


def frame(seq: int, size: int = 4) -> Frame:
    return Frame(seq, "text_delta", b"x" * size)


async def test_frames_over_the_byte_budget_end_the_queue_after_what_fit() -> None:
    queue = FrameQueue(max_bytes=10)
    for seq in (1, 2, 3, 4):
        queue.deliver(frame(seq))
    assert queue.overflowed
    assert [(await queue.next(1)).seq, (await queue.next(1)).seq] == [1, 2]
    assert await queue.next(1) is None  # the reader is told once, after what was queued
    queue.deliver(frame(5))
    with pytest.raises(TimeoutError):  # nothing more is queued once it overflowed
        await queue.next(0.01)


async def test_frames_taken_give_their_bytes_back() -> None:
    queue = FrameQueue(max_bytes=10)
    for seq in range(1, 20):
        queue.deliver(frame(seq))
        assert (await queue.next(1)).seq == seq
    assert not queue.overflowed and queue.queued_bytes == 0
