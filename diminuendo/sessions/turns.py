"""The commands that need a session's runtime: run a turn, stop it, steer it, answer its question.

This instance runs them when it holds the session's runtime socket. In fleet mode a session may
be followed here and owned by another instance (`Activator.followed`): the command then goes to
the owner through `remote` (`fleet.remote.RemoteCommands`) after the same permission checks a
local one passes here, and its answer — or its error — is the caller's, as if local. The turn's
events reach this instance through the session's stream, as for any follower; a turn's id is
chosen here, so the requester's `turn_started` is known when it arrives (`on_accept`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from diminuendo.auth.identity import Identity
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.access import SessionAccess
from diminuendo.sessions.activation import Activator
from diminuendo.sessions.live import BUSY, Turn, now_ms
from diminuendo.sessions.state import SessionStatus

__all__ = ["Remote", "Turns"]


class Remote(Protocol):
    """Where the commands of a session owned by another instance go (fleet mode)."""

    async def forward(
        self, identity: Identity, session_id: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The owner's answer to command `name`, or its error raised here."""


def new_turn_id() -> str:
    return f"trn_{uuid.uuid4().hex}"


class Turns:
    def __init__(self, access: SessionAccess, activation: Activator) -> None:
        self.access = access
        self.activation = activation
        self.active = activation.active
        self.remote: Remote | None = None

    def __repr__(self) -> str:
        return f"Turns(remote={self.remote is not None})"

    def _owner_elsewhere(self, session_id: str) -> Remote | None:
        """`remote` when the session is a copy of another instance's, else None."""
        active = self.active.get(session_id)
        if self.remote is None or active is None or not self.activation.followed(active):
            return None
        return self.remote

    async def run_turn(
        self,
        identity: Identity,
        session_id: str,
        text: str,
        client_turn_id: str | None = None,
        *,
        on_accept: Callable[[str], None] | None = None,
        turn_id: str | None = None,
    ) -> Turn:
        """Accept a turn (activating first if needed). `on_accept(turn_id)` runs before the
        `turn_started` event is published, so an edge can mark its copy as the reply. `turn_id`
        is the one a forwarding instance chose (else a new one)."""
        self.activation.refuse_when_draining()
        active = await self.access.held(identity, session_id)
        turn = Turn(turn_id or new_turn_id(), text, now_ms(), client_turn_id)
        remote = self._owner_elsewhere(session_id)
        if remote is not None:
            if on_accept is not None:
                on_accept(turn.turn_id)
            body = {"text": text, "clientTurnId": client_turn_id, "turnId": turn.turn_id}
            await remote.forward(identity, session_id, "run_turn", body)
            return turn
        if active.status in BUSY or active.turn is not None:
            raise GatewayError(ErrorCode.SESSION_BUSY, session_id=session_id)
        await self.activation.activate(active)
        if active.status in BUSY or active.turn is not None:
            raise GatewayError(ErrorCode.SESSION_BUSY, session_id=session_id)
        if on_accept is not None:
            on_accept(turn.turn_id)
        active.live.start_turn(turn)
        try:
            await active.driver.run(turn)
        except GatewayError as exc:
            active.live.end_turn_with_error(exc.code, exc.message, SessionStatus.ERROR)
            raise
        # Not written to Unison now: `running` is a live state only the instance holding the
        # session knows (instances are tenant-sticky), and the turn's end writes status,
        # lastActivityAt, usage and lastSeq. One write per turn instead of two.
        return turn

    async def stop_turn(
        self, identity: Identity, session_id: str, *, turn_id: str | None = None
    ) -> None:
        """Interrupt the running turn (only if it is `turn_id`, when given); idempotent."""
        await self.access.record(identity, session_id)  # tenancy
        remote = self._owner_elsewhere(session_id)
        if remote is not None:
            await remote.forward(identity, session_id, "stop_turn", {"turnId": turn_id})
            return
        active = self.active.get(session_id)
        turn = active.turn if active is not None else None
        if active is None or turn is None or active.driver.runtime is None:
            return
        if turn_id is None or turn.turn_id == turn_id:
            await active.driver.interrupt(turn.turn_id)

    async def steer(self, identity: Identity, session_id: str, content: str) -> None:
        remote = self._owner_elsewhere(session_id)
        if remote is not None:
            await self.access.record(identity, session_id)  # tenancy
            await remote.forward(identity, session_id, "steer", {"content": content})
            return
        active = await self.access.running(identity, session_id)
        await active.driver.steer(content)

    async def answer(
        self,
        identity: Identity,
        session_id: str,
        request_id: str,
        *,
        answers: dict[str, Any] | None,
        approved: bool,
        dismissed: bool,
    ) -> None:
        remote = self._owner_elsewhere(session_id)
        if remote is not None:
            await self.access.record(identity, session_id)  # tenancy
            body = {
                "requestId": request_id,
                "answers": answers,
                "approved": approved,
                "dismissed": dismissed,
            }
            await remote.forward(identity, session_id, "answer_question", body)
            return
        active = await self.access.running(identity, session_id)
        if request_id not in active.live.pending:
            raise GatewayError(
                ErrorCode.INVALID_STATE,
                "No pending question with that requestId",
                session_id=session_id,
            )
        await active.driver.answer(request_id, answers, approved, dismissed)
