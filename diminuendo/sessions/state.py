"""The session state machine of PROTOCOL.md §4, as data plus two pure functions.

The table is the single authority on which status changes are legal; services ask it before they
write a status. An illegal transition is a bug in the caller, never a crash of the gateway: the
caller catches `IllegalTransition`, logs it and keeps the session in its current status.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "IllegalTransition",
    "SessionStatus",
    "can_transition",
    "recover_status",
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


def can_transition(current: SessionStatus, target: SessionStatus) -> bool:
    """Whether `current` → `target` is in the table. A self-transition is never legal: a no-op
    write would hide a caller that lost track of the status."""
    return target in _ALLOWED[current]


def transition(current: SessionStatus, target: SessionStatus) -> SessionStatus:
    """Return `target` when the change is legal, else raise `IllegalTransition`.

    Written as `status = transition(status, X)` so the check and the assignment cannot drift apart.
    """
    if target not in _ALLOWED[current]:
        raise IllegalTransition(current, target)
    return target


def recover_status(status: SessionStatus) -> SessionStatus:
    """The status a session left behind by a previous process resumes in at start-up.

    Always `inactive`: the agent instance and runtime socket belonged to the old process, so
    whatever the record says, nothing is running now. This is deliberately not a `transition`
    (e.g. `running` → `inactive` is not in the table): it repairs a record, it does not move a
    live session. Callers rewrite the record only when the result differs from `status`.
    """
    return SessionStatus.INACTIVE
