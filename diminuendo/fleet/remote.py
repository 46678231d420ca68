"""Runtime commands between instances (fleet mode): `sessions.turns.Remote` on the sending side,
the `forwarding.Forwarder` handler on the owner's.

Sending: the session's holder is read from its lease and the command goes to its inbox, with
the sender's user, tenant and role (the sender checked the permission, as for a local command;
the owner checks the tenant again by reading the record as that identity). `NotOwner` (the lease
moved while the request travelled) reads the holder again, once. No holder at all: the owner is
gone and its lease has run out — `UPSTREAM_UNAVAILABLE`, retry shortly (the next join takes the
session over).

Owning: a request is run only if its `owner_token` is the lease this instance holds for the
session (else `NotOwner`), through the same `Turns` a local client uses; the answer is the
command's immediate one (`turnId` for `run_turn`), not the turn: its events reach the sender
through the session's log and channel.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from loguru import logger

from diminuendo.auth.identity import Identity, Role
from diminuendo.fleet.connection import FleetUnavailable
from diminuendo.fleet.forwarding import Command, Forwarder, ForwardFailed, NotOwner
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.turns import Turns

if TYPE_CHECKING:
    from diminuendo.fleet.runtime import Fleet

__all__ = ["RemoteCommands"]


class RemoteCommands:
    def __init__(self, fleet: Fleet, turns: Turns) -> None:
        self._fleet = fleet
        self._turns = turns
        self._forwarder = Forwarder(
            fleet.client, fleet.url, fleet.keys, fleet.instance_id, self.handle, bus=fleet.bus
        )

    def __repr__(self) -> str:
        return f"RemoteCommands({self._fleet.instance_id})"

    async def start(self) -> None:
        """Listen on this instance's inbox; Valkey down is not fatal (the bus keeps trying)."""
        try:
            await self._forwarder.start()
        except FleetUnavailable as exc:
            self._fleet.availability.failed(exc)
            logger.warning("forwarded commands: inbox not subscribed yet ({})", exc)

    async def close(self) -> None:
        await self._forwarder.close()

    # --- the sender's side ----------------------------------------------------------------

    async def forward(
        self, identity: Identity, session_id: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        for _ in range(2):
            try:
                holder = await self._fleet.leases.holder(session_id)
            except FleetUnavailable as exc:
                self._fleet.availability.failed(exc)
                raise ForwardFailed("unavailable", session_id, 1000) from exc
            if holder is None:
                break
            command = Command(
                session_id=session_id,
                name=name,
                tenant_id=identity.tenant_id,
                user_id=identity.user_id,
                owner_token=holder,
                body={**body, "role": identity.role.name},
            )
            with suppress(NotOwner):
                return await self._forwarder.forward(holder, command)
        raise ForwardFailed("owner_gone", session_id, 1000)

    # --- the owner's side -----------------------------------------------------------------

    async def handle(self, command: Command) -> dict[str, Any]:
        if not self._fleet.ownership.holds(command.session_id, command.owner_token):
            raise NotOwner(f"session {command.session_id} is not held with that lease")
        body = command.body
        try:
            role = Role.parse(body.get("role", ""))
        except ValueError:
            raise GatewayError(ErrorCode.INVALID_MESSAGE, "Unknown role") from None
        identity = Identity(command.user_id, None, command.tenant_id, role)
        turns, session_id = self._turns, command.session_id
        if command.name == "run_turn":
            turn = await turns.run_turn(
                identity,
                session_id,
                body.get("text", ""),
                body.get("clientTurnId"),
                turn_id=body.get("turnId"),
            )
            return {"turnId": turn.turn_id}
        if command.name == "stop_turn":
            await turns.stop_turn(identity, session_id, turn_id=body.get("turnId"))
        elif command.name == "steer":
            await turns.steer(identity, session_id, body.get("content", ""))
        else:  # answer_question: `forward` refuses any other name
            await turns.answer(
                identity,
                session_id,
                body.get("requestId", ""),
                answers=body.get("answers"),
                approved=bool(body.get("approved")),
                dismissed=bool(body.get("dismissed")),
            )
        return {}
