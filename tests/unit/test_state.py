"""The session state machine (PROTOCOL.md §4)."""

from __future__ import annotations

import itertools

import pytest

from diminuendo.sessions.state import (
    IllegalTransition,
    SessionStatus,
    transition,
)

S = SessionStatus

# Written out from the PROTOCOL.md §4 table, independently of the module's own table.
LEGAL = {
    (S.INACTIVE, S.ACTIVATING),
    (S.ACTIVATING, S.READY),
    (S.ACTIVATING, S.ERROR),
    (S.ACTIVATING, S.INACTIVE),
    (S.READY, S.RUNNING),
    (S.READY, S.DEACTIVATING),
    (S.READY, S.ERROR),
    (S.RUNNING, S.READY),
    (S.RUNNING, S.WAITING),
    (S.RUNNING, S.ERROR),
    (S.RUNNING, S.DEACTIVATING),
    (S.WAITING, S.RUNNING),
    (S.WAITING, S.ERROR),
    (S.WAITING, S.DEACTIVATING),
    (S.DEACTIVATING, S.INACTIVE),
    (S.ERROR, S.ACTIVATING),
    (S.ERROR, S.DEACTIVATING),
    (S.ERROR, S.INACTIVE),
}
ALL_PAIRS = list(itertools.product(SessionStatus, repeat=2))


def test_seven_statuses_with_wire_values() -> None:
    assert [s.value for s in SessionStatus] == [
        "inactive",
        "activating",
        "ready",
        "running",
        "waiting",
        "deactivating",
        "error",
    ]
    assert len(ALL_PAIRS) == 49


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS)
def test_every_pair(current: SessionStatus, target: SessionStatus) -> None:
    legal = (current, target) in LEGAL
    if legal:
        assert transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(current, target)
        assert info.value.current is current
        assert info.value.target is target
        assert f"{current} -> {target}" in str(info.value)


@pytest.mark.parametrize("status", list(SessionStatus))
def test_self_transition_refused(status: SessionStatus) -> None:
    with pytest.raises(IllegalTransition):
        transition(status, status)


def test_a_full_turn_with_a_question() -> None:
    status = S.INACTIVE
    for target in (S.ACTIVATING, S.READY, S.RUNNING, S.WAITING, S.RUNNING, S.READY):
        status = transition(status, target)
    for target in (S.DEACTIVATING, S.INACTIVE):
        status = transition(status, target)
    assert status is S.INACTIVE
