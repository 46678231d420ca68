"""The one door to a session: who may reach it, and its record or live half for them.

Tenancy is decided here, in `authorize`, with the read rule of `auth/policy.py`: another tenant's
session (or, for guests, another user's) is `SESSION_NOT_FOUND`, exactly as a missing one. Every
operation of `SessionService` on one session comes through `record`, `held` or `running`.
"""

from __future__ import annotations

import time

from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import may_read_session
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.models import SessionRecord
from diminuendo.sessions.activation import Activator
from diminuendo.sessions.active import ActiveSession
from diminuendo.sessions.records import RecordStore

__all__ = ["SessionAccess", "authorize"]


def authorize(identity: Identity, record: SessionRecord) -> None:
    """`SESSION_NOT_FOUND` unless `identity` may read the session."""
    if not may_read_session(identity, record.tenant_id, record.owner_id):
        raise GatewayError(ErrorCode.SESSION_NOT_FOUND, session_id=record.id)


class SessionAccess:
    def __init__(self, records: RecordStore, activation: Activator) -> None:
        self.records = records
        self.activation = activation
        self.active = activation.active

    def __repr__(self) -> str:
        return f"SessionAccess({self.records!r})"

    async def record(self, identity: Identity, session_id: str) -> tuple[SessionRecord, int]:
        """The session's record and version, authorized: the live one when this process holds
        it (with its usage and last activity), else the stored one."""
        active = self.active.get(session_id)
        if active is not None:
            record, version = active.current(), active.version
        else:
            record, version = await self.records.read(identity.tenant_id, session_id)
        authorize(identity, record)
        return record, version

    async def held(self, identity: Identity, session_id: str) -> ActiveSession:
        """The session's live half, held (but not yet activated) if this process lacks it."""
        active = self.active.get(session_id)
        if active is None:
            record, version = await self.record(identity, session_id)
            stream = None if session_id in self.active else await self.activation.claim(record)
            active = self.active.get(session_id)  # another task may have won the race
            if active is None:
                active = self.activation.hold(record, version, stream)
        else:
            await self.record(identity, session_id)
        active.last_used = time.monotonic()
        return active

    async def running(self, identity: Identity, session_id: str) -> ActiveSession:
        """The live half of a session running a turn; `INVALID_STATE` when none is."""
        await self.record(identity, session_id)
        active = self.active.get(session_id)
        if active is None or active.turn is None or active.driver.runtime is None:
            raise GatewayError(ErrorCode.INVALID_STATE, "No turn is running", session_id=session_id)
        return active
