"""When open connections must be told their token is expiring, and when they must be closed
(PROTOCOL.md §3).

A connection authenticated by a JWT keeps its identity until the token's ``exp`` plus the clock
leeway. ``refresh_window_s`` before ``exp`` it is warned once (``auth_expiring``) so the client
can send a fresh token; at ``exp + leeway_s`` without one it is closed (4003).

Pure: the caller passes the time in (epoch seconds, the clock ``exp`` is read against) and acts
on what ``due`` returns. One schedule serves every connection of the process through one
periodic sweep (the Hub's), not a timer per connection: keys sit in buckets of
``RESOLUTION_S``, and a sweep that finds nothing due costs one comparison. Adding, moving and
forgetting a key are O(1) and leave no reference to it behind, so closed connections are freed
at once, whatever their token's lifetime.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

RESOLUTION_S = 0.25

K = TypeVar("K", bound=Hashable)


class _Deadlines(NamedTuple):
    expires_at: float
    warn_bucket: int
    close_bucket: int


class Due(NamedTuple, Generic[K]):
    """What a sweep must do now: warn these keys (with their ``exp``), close those."""

    warn: list[tuple[K, float]]
    close: list[K]


class ExpirySchedule(Generic[K]):
    """Warn and close deadlines of every tracked key; each deadline fires once."""

    def __init__(self, refresh_window_s: float, leeway_s: float) -> None:
        self.refresh_window_s = refresh_window_s
        self.leeway_s = leeway_s
        self._deadlines: dict[K, _Deadlines] = {}
        self._warn: dict[int, set[K]] = {}
        self._close: dict[int, set[K]] = {}
        # A heap of the bucket numbers that may hold keys: pushed when a bucket is created, so
        # an emptied one stays until it is due, as an int that keeps no key alive.
        self._buckets: list[int] = []

    def __len__(self) -> int:
        return len(self._deadlines)

    def track(self, key: K, expires_at: float) -> None:
        """Schedule ``key``'s warning and close for a token expiring at ``expires_at``; a key
        already tracked moves to the new deadlines (a fresh token). Tracking the same
        ``expires_at`` again changes nothing: the warning for a token is sent once."""
        current = self._deadlines.get(key)
        if current is not None:
            if current.expires_at == expires_at:
                return
            self.forget(key)
        deadlines = _Deadlines(
            expires_at,
            _bucket(expires_at - self.refresh_window_s),
            _bucket(expires_at + self.leeway_s),
        )
        self._deadlines[key] = deadlines
        self._add(self._warn, deadlines.warn_bucket, key)
        self._add(self._close, deadlines.close_bucket, key)

    def forget(self, key: K) -> None:
        """Stop tracking ``key`` (the connection closed); unknown keys are ignored."""
        deadlines = self._deadlines.pop(key, None)
        if deadlines is None:
            return
        _discard(self._warn, deadlines.warn_bucket, key)
        _discard(self._close, deadlines.close_bucket, key)

    def due(self, now: float) -> Due[K]:
        """Everything due at ``now``: keys to warn (once) and keys to close (no longer
        tracked afterwards). A key closed in this sweep is not also warned."""
        warn: list[tuple[K, float]] = []
        close: list[K] = []
        buckets = self._buckets
        while buckets and buckets[0] * RESOLUTION_S <= now:
            bucket = heapq.heappop(buckets)
            close.extend(self._close.pop(bucket, ()))
            warn.extend(
                (key, self._deadlines[key].expires_at) for key in self._warn.pop(bucket, ())
            )
        for key in close:
            self.forget(key)
        if close:
            warn = [(key, exp) for key, exp in warn if key in self._deadlines]
        return Due(warn, close)

    def _add(self, buckets: dict[int, set[K]], bucket: int, key: K) -> None:
        keys = buckets.get(bucket)
        if keys is None:
            keys = buckets[bucket] = set()
            heapq.heappush(self._buckets, bucket)
        keys.add(key)


def _bucket(at: float) -> int:
    """The first bucket that starts at or after ``at``: a deadline never fires early."""
    return math.ceil(at / RESOLUTION_S)


def _discard(buckets: dict[int, set[K]], bucket: int, key: K) -> None:
    keys = buckets.get(bucket)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del buckets[bucket]
