"""Retry with jittered backoff and a per-service circuit breaker (UPSTREAMS.md preamble).

The breaker keeps a dead upstream from costing every client a full timeout: after
`failure_threshold` consecutive failures calls fail at once for `open_seconds`, then one probe
call is let through; its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class CircuitOpen(Exception):
    """The breaker is open; the call was not attempted."""


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        open_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.open_seconds:
            return "half-open"
        return "open"

    def before_call(self) -> None:
        """Raise `CircuitOpen` unless a call may go out now."""
        state = self.state
        if state == "open" or (state == "half-open" and self._probing):
            raise CircuitOpen
        if state == "half-open":
            self._probing = True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()


def backoff_delay(attempt: int, *, base: float = 0.1, cap: float = 2.0) -> float:
    """Full-jitter exponential backoff: attempt 1 → up to `base`, doubling up to `cap`."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
