"""An edge client's answer to what a turn waits on, handed to the gateway (docs/EDGES.md).

Each edge reads the answer in its protocol's shape (an AG-UI resume entry, an A2A message, the
MCP tool's arguments) into the three fields of the WebSocket `answer_question` message, then
answers through `send_reply`, the one place an edge answers a pending request.
"""

from __future__ import annotations

from typing import Any, Protocol

from diminuendo.auth.identity import Identity
from diminuendo.gateway.context import Gateway


class Reply(Protocol):
    """`answers` (question id → answer) for a question, `approved` for a permission request,
    `dismissed` to decline either."""

    @property
    def answers(self) -> dict[str, Any] | None: ...

    @property
    def approved(self) -> bool | None: ...

    @property
    def dismissed(self) -> bool | None: ...


async def send_reply(
    gateway: Gateway, identity: Identity, session_id: str, request_id: str, reply: Reply
) -> None:
    """Answer `request_id` of the session's running turn with `reply`."""
    await gateway.sessions.answer(
        identity,
        session_id,
        request_id,
        answers=reply.answers,
        approved=reply.approved,
        dismissed=reply.dismissed,
    )
