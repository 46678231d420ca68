"""The process-wide replay budget (diminuendo.sessions.budget) and the streams that share it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from diminuendo.sessions.budget import ReplayBudget, water_level
from diminuendo.sessions.stream import SessionStream


def delta(text: str) -> dict[str, Any]:
    return {"type": "text_delta", "turnId": "t1", "text": text}


class CountedStream(SessionStream):
    """A stream that counts how often the budget trims it."""

    __slots__ = ("trims",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trims = 0

    def trim_to(self, max_bytes: int) -> None:
        self.trims += 1
        super().trim_to(max_bytes)


@given(st.lists(st.integers(0, 10_000), max_size=40), st.integers(0, 200_000))
def test_water_level_is_the_highest_level_that_fits(sizes: list[int], target: int) -> None:
    level = water_level(sizes, target)
    assert sum(min(s, level) for s in sizes) <= target or not sizes
    if sizes and level < max(sizes):
        # one byte more and the capped total would not fit
        assert sum(min(s, level + 1) for s in sizes) > target


def test_water_level_leaves_small_windows_alone() -> None:
    assert water_level([10, 5, 1], 9) == 4  # 4 + 4 + 1
    assert water_level([3, 2], 100) == 3  # under target: nothing to cap


def test_streams_over_the_budget_trim_the_largest_first() -> None:
    budget = ReplayBudget(max_bytes=20_000)
    big = CountedStream("big", "e", budget=budget)
    small = SessionStream("small", "e", budget=budget)
    for _ in range(5):
        small.publish(delta("s" * 100), 1)
    small_bytes = small.retained_bytes
    for _ in range(200):
        big.publish(delta("b" * 100), 1)

    assert budget.used == big.retained_bytes + small.retained_bytes
    assert budget.used <= budget.max_bytes
    assert big.trims >= 1
    assert small.retained_bytes == small_bytes, "a small window is not trimmed"
    assert big.retained_bytes <= budget.max_bytes - small_bytes
    assert big.trims < 20, "each trim frees a tenth of the budget, so trims are rare"


def test_a_trimmed_window_reports_a_gap_and_keeps_the_newest_frames() -> None:
    budget = ReplayBudget(max_bytes=5_000)
    stream = SessionStream("s", "e", budget=budget)
    frames = [stream.publish(delta("x" * 100), 1) for _ in range(100)]

    replay = stream.replay(0, limit=1000)
    assert replay.gap is True
    assert replay.frames == frames[-len(replay.frames) :], "the newest frames survive, in order"
    late = stream.replay(frames[-3].seq)
    assert late.gap is False and late.frames == frames[-2:]


def test_a_closed_stream_gives_its_bytes_back() -> None:
    budget = ReplayBudget(max_bytes=1_000_000)
    stream = SessionStream("s", "e", budget=budget)
    other = SessionStream("o", "e", budget=budget)
    for _ in range(10):
        stream.publish(delta("x"), 1)
        other.publish(delta("y"), 1)
    stream.close()
    assert budget.used == other.retained_bytes
    stream.publish(delta("after close"), 1)  # still publishes, no longer counted
    assert budget.used == other.retained_bytes


def test_per_session_eviction_is_reported_to_the_budget() -> None:
    budget = ReplayBudget(max_bytes=1_000_000)
    stream = SessionStream("s", "e", max_events=3, budget=budget)
    for _ in range(10):
        stream.publish(delta("x"), 1)
    assert len(stream.replay(0).frames) == 3
    assert budget.used == stream.retained_bytes
