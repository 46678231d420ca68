"""One loop timer for many paced streams: the `slow` agent's deltas at load-test scale.

Under uvloop every `call_later` allocates a libuv timer and its handle; with 5,000 `slow` turns
streaming that was a third of the stand-in's CPU per delta, on the cores the gateway under test
shares. A `Pacer` keeps the due times in a heap and arms one loop timer for the earliest; every
callback due within `slack_s` of the moment it fires runs in that one loop callback, in due
order (ties in the order they were scheduled).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

from loguru import logger


class Beat:
    """A scheduled callback; `cancel()` before it runs and it never does."""

    __slots__ = ("args", "callback", "cancelled")

    def __init__(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Pacer:
    __slots__ = ("_armed_for", "_heap", "_loop", "_order", "_timer", "slack_s")

    def __init__(self, slack_s: float = 0.001) -> None:
        self.slack_s = slack_s
        self._heap: list[tuple[float, int, Beat]] = []
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    def time(self) -> float:
        """The clock `call_at` takes (the running loop's)."""
        return self._bound_loop().time()

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Beat:
        """Run `callback(*args)` at loop time `when` (or up to `slack_s` before it)."""
        loop = self._bound_loop()
        beat = Beat(callback, args)
        heapq.heappush(self._heap, (when, next(self._order), beat))
        if when < self._armed_for:
            self._arm(loop, when)
        return beat

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # one loop at a time: a new one (a test's) starts afresh
            if self._timer is not None:
                self._timer.cancel()
            self._loop, self._timer, self._armed_for = loop, None, float("inf")
            self._heap.clear()
        return loop

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = when
        self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        # While firing, beats scheduled by the callbacks only join the heap; the one timer is
        # armed for the earliest after the round, whatever a callback raised.
        self._timer, self._armed_for = None, float("-inf")
        heap, loop = self._heap, self._bound_loop()
        horizon = loop.time() + self.slack_s
        try:
            while heap and heap[0][0] <= horizon:
                beat = heapq.heappop(heap)[2]
                if beat.cancelled:
                    continue
                try:
                    beat.callback(*beat.args)
                except Exception:  # one broken stream must not stop the others' beats
                    logger.exception("paced callback failed")
        finally:
            self._armed_for = float("inf")
            if heap:
                self._arm(loop, heap[0][0])
