"""The session state machine of PROTOCOL.md §4, as data plus one pure function.

The table is the single authority on which status changes are legal; every status change goes
through `transition`, in `LiveSession.set_status` (live.py). An illegal transition is a bug in the
caller, never a crash of the gateway: `set_status` catches `IllegalTransition`, logs it as an
error and still moves the session to the requested status (it reflects what really happened
upstream, and a session stuck in a status it has left would refuse the next legal step). A change
to the same status is no change: `set_status` skips it before asking.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "IllegalTransition",
    "SessionStatus",
    "transition",
]


class SessionStatus(StrEnum):
    """`SessionMeta.status`. A StrEnum so it encodes as the plain wire string."""

    INACTIVE = "inactive"
    ACTIVATING = "activating"
    READY = "ready"
    RUNNING = "running"
    WAITING = "waiting"
    DEACTIVATING = "deactivating"
    ERROR = "error"


_S = SessionStatus
_ALLOWED: dict[SessionStatus, frozenset[SessionStatus]] = {
    _S.INACTIVE: frozenset({_S.ACTIVATING}),
    _S.ACTIVATING: frozenset({_S.READY, _S.ERROR, _S.INACTIVE}),
    _S.READY: frozenset({_S.RUNNING, _S.DEACTIVATING, _S.ERROR}),
    _S.RUNNING: frozenset({_S.READY, _S.WAITING, _S.ERROR, _S.DEACTIVATING}),
    _S.WAITING: frozenset({_S.RUNNING, _S.ERROR, _S.DEACTIVATING}),
    _S.DEACTIVATING: frozenset({_S.INACTIVE}),
    _S.ERROR: frozenset({_S.ACTIVATING, _S.DEACTIVATING, _S.INACTIVE}),
}


class IllegalTransition(Exception):
    """A status change the §4 table does not allow. Carries both ends for the log line."""

    def __init__(self, current: SessionStatus, target: SessionStatus) -> None:
        super().__init__(f"illegal session transition {current} -> {target}")
        self.current = current
        self.target = target


def transition(current: SessionStatus, target: SessionStatus) -> SessionStatus:
    """Return `target` when the change is legal, else raise `IllegalTransition`. A
    self-transition is never legal: a no-op write would hide a caller that lost track of the
    status.

    Written as `status = transition(status, X)` so the check and the assignment cannot drift apart.
    """
    if target not in _ALLOWED[current]:
        raise IllegalTransition(current, target)
    return target
