"""`ExpirySchedule`: warn once `refresh_window_s` before `exp`, close at `exp + leeway_s`, never
early, and forget closed connections completely (PROTOCOL.md §3)."""

from __future__ import annotations

import gc
import weakref

from diminuendo.auth.expiry import RESOLUTION_S, ExpirySchedule

WINDOW, LEEWAY = 60.0, 30.0
EXP = 1_000.0


class Key:
    """A hashable stand-in for a connection (compared by identity, like `Connection`)."""


def test_warns_once_then_closes_at_exp_plus_leeway() -> None:
    schedule: ExpirySchedule[str] = ExpirySchedule(WINDOW, LEEWAY)
    schedule.track("a", EXP)
    assert schedule.due(EXP - WINDOW - 0.01) == ([], [])
    assert schedule.due(EXP - WINDOW) == ([("a", EXP)], [])
    assert schedule.due(EXP) == ([], [])  # warned once only
    assert schedule.due(EXP + LEEWAY - 0.01) == ([], [])
    assert schedule.due(EXP + LEEWAY) == ([], ["a"])
    assert len(schedule) == 0 and schedule.due(EXP + 1e6) == ([], [])


def test_deadlines_are_never_early_and_late_by_at_most_the_resolution() -> None:
    schedule: ExpirySchedule[str] = ExpirySchedule(WINDOW, LEEWAY)
    exp = EXP + 0.1  # not on a bucket boundary
    schedule.track("a", exp)
    assert schedule.due(exp + LEEWAY - 0.001).close == []
    assert schedule.due(exp + LEEWAY + RESOLUTION_S).close == ["a"]


def test_a_fresh_token_moves_both_deadlines_and_warns_again() -> None:
    schedule: ExpirySchedule[str] = ExpirySchedule(WINDOW, LEEWAY)
    schedule.track("a", EXP)
    assert schedule.due(EXP - WINDOW).warn == [("a", EXP)]
    schedule.track("a", EXP)  # the same token again: nothing changes, no second warning
    assert schedule.due(EXP - 1) == ([], [])
    schedule.track("a", EXP + 600)
    assert schedule.due(EXP + LEEWAY + 1) == ([], [])  # the old close is gone
    assert schedule.due(EXP + 600 - WINDOW) == ([("a", EXP + 600)], [])
    assert schedule.due(EXP + 600 + LEEWAY) == ([], ["a"])


def test_a_token_already_inside_the_window_is_warned_at_the_next_sweep() -> None:
    schedule: ExpirySchedule[str] = ExpirySchedule(WINDOW, LEEWAY)
    now = EXP - 10  # authenticated with 10 s left
    schedule.due(now)
    schedule.track("a", EXP)
    assert schedule.due(now) == ([("a", EXP)], [])


def test_a_sweep_that_closes_a_key_does_not_also_warn_it() -> None:
    schedule: ExpirySchedule[str] = ExpirySchedule(WINDOW, LEEWAY)
    schedule.track("a", EXP)
    schedule.track("b", EXP + 500)
    assert schedule.due(EXP + LEEWAY) == ([], ["a"])  # the sweeps in between never ran


def test_forgotten_keys_are_neither_warned_nor_closed_nor_kept_alive() -> None:
    schedule: ExpirySchedule[Key] = ExpirySchedule(WINDOW, LEEWAY)
    keys = [Key() for _ in range(1_000)]
    for index, key in enumerate(keys):
        schedule.track(key, EXP + index)
    kept = keys[::2]
    for key in keys[1::2]:
        schedule.forget(key)
    schedule.forget(Key())  # unknown: ignored
    probe = weakref.ref(keys[1])
    del keys
    gc.collect()
    assert probe() is None, "a forgotten key is still referenced"
    warned, closed = schedule.due(EXP + 10_000)
    assert {key for key, _ in warned} == set() and set(closed) == set(kept)
