"""Test doubles shared by the unit tests."""

from __future__ import annotations


class Clock:
    """A clock the test sets by hand (`clock.now = …`), for code that takes a `clock` callable."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
