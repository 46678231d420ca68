"""Circuit breaker and backoff, driven by a fake clock."""

from __future__ import annotations

import pytest

from diminuendo.upstreams.resilience import CircuitBreaker, CircuitOpen, backoff_delay
from tests.unit.fakes import Clock


def test_opens_after_five_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(4):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(clock=Clock())
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state == "closed"


def test_half_open_lets_one_probe_through_then_closes_or_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now = 10.0
    assert breaker.state == "half-open"
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one at a time
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now = 20.0
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.before_call()


def test_backoff_is_jittered_and_capped() -> None:
    delays = [backoff_delay(attempt, base=0.1, cap=2.0) for attempt in range(1, 12)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert all(backoff_delay(1, base=0.1) <= 0.1 for _ in range(100))
