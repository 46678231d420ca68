"""The process-wide cap on retained replay bytes, shared by every session's stream.

Each stream keeps up to `REPLAY_MAX_EVENTS` / `REPLAY_MAX_BYTES` (PROTOCOL.md §7: 10,000 events or
8 MiB). Five thousand busy sessions at that size would hold 40 GB, twenty times the process's
2 GB budget, so the windows also share one budget (`REPLAY_BUDGET_BYTES`). When the total goes
over it, the largest windows are trimmed, oldest frames first, to one common level — chosen so
that the total drops to 90% of the budget — and windows below that level are not touched. The
10% headroom makes trims rare (one per tenth of the budget published) instead of one per frame.

A client that needed a trimmed frame gets `gap: true` and rebuilds from `get_history`, exactly as
after a per-session eviction: trimming costs a reconnecting client a history fetch, never an
event out of order. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ReplayBudget", "water_level"]

HEADROOM = 0.9


class Trimmable(Protocol):
    @property
    def retained_bytes(self) -> int: ...

    def trim_to(self, max_bytes: int) -> None:
        """Evict oldest frames until at most `max_bytes` are retained (reporting them back
        through `ReplayBudget.release`)."""


class ReplayBudget:
    __slots__ = ("_streams", "max_bytes", "used")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._streams: dict[int, Trimmable] = {}

    def register(self, stream: Trimmable) -> None:
        self._streams[id(stream)] = stream

    def unregister(self, stream: Trimmable) -> None:
        """The stream's session left memory: its bytes no longer count."""
        if self._streams.pop(id(stream), None) is not None:
            self.used -= stream.retained_bytes

    def charge(self, size: int) -> None:
        """`size` more bytes retained by a registered stream; rebalance when over budget."""
        self.used += size
        if self.used > self.max_bytes:
            self._rebalance()

    def release(self, size: int) -> None:
        self.used -= size

    def _rebalance(self) -> None:
        streams = list(self._streams.values())
        level = water_level([s.retained_bytes for s in streams], int(self.max_bytes * HEADROOM))
        for stream in streams:
            if stream.retained_bytes > level:
                stream.trim_to(level)


def water_level(sizes: list[int], target: int) -> int:
    """The highest level L with `sum(min(size, L)) <= target`: capping every size at L brings the
    total to at most `target` while leaving everything at or below L alone."""
    ordered = sorted(sizes, reverse=True)
    rest = sum(ordered)
    if rest <= target:
        return ordered[0] if ordered else 0
    for capped, size in enumerate(ordered, start=1):
        rest -= size  # the total of the sizes below the `capped` largest
        level = (target - rest) // capped
        below = ordered[capped] if capped < len(ordered) else 0
        if level >= below:
            return max(level, 0)
    return 0
