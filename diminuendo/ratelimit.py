"""Sliding-window rate limits (per connection for messages, per IP for failed authentications).

Pure: the caller passes the time in, so tests drive it without sleeping.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class SlidingWindow:
    """At most `limit` hits in any `window_s` seconds."""

    __slots__ = ("_hits", "limit", "window_s")

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: deque[float] = deque()

    def _expire(self, now: float) -> None:
        hits = self._hits
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()

    def retry_after(self, now: float) -> float | None:
        """Seconds until another hit is allowed, or None when one is allowed now."""
        self._expire(now)
        if len(self._hits) < self.limit:
            return None
        return max(0.0, self._hits[0] + self.window_s - now)

    def hit(self, now: float) -> float | None:
        """Record a hit if allowed (→ None), else return the seconds to wait (not recorded)."""
        wait = self.retry_after(now)
        if wait is None:
            self._hits.append(now)
        return wait


class KeyedWindows:
    """One `SlidingWindow` per key (e.g. client IP), bounded to `max_keys` most recent keys."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._windows: OrderedDict[str, SlidingWindow] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float | None:
        window = self._windows.get(key)
        return None if window is None else window.retry_after(now)

    def hit(self, key: str, now: float) -> float | None:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = SlidingWindow(self.limit, self.window_s)
            if len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(key)
        return window.hit(now)
