"""`ActiveSession`: what this process holds of one session it serves — the stored record and its
version, the live half (`LiveSession`) and its driver, the subscribers, the capacity slot and the
state of its background write."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import msgspec

from diminuendo.protocol.models import SessionRecord
from diminuendo.sessions.driver import RuntimeDriver
from diminuendo.sessions.live import LiveSession, Turn
from diminuendo.sessions.state import SessionStatus
from diminuendo.sessions.stream import SessionStream, Subscriber

__all__ = ["ActiveSession"]


@dataclass(eq=False)
class ActiveSession:
    record: SessionRecord  # as last read from or written to Unison; the live fields are in `live`
    version: int
    live: LiveSession
    driver: RuntimeDriver
    subscribers: set[Subscriber] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    writing: bool = False
    dirty: bool = False
    holds_slot: bool = False  # counted against MAX_ACTIVE_SESSIONS and its tenant's quota

    @property
    def status(self) -> SessionStatus:
        return self.live.status

    @property
    def turn(self) -> Turn | None:
        return self.live.turn

    @property
    def stream(self) -> SessionStream:
        return self.live.stream

    @property
    def idle(self) -> bool:
        return not self.subscribers and not self.live.busy

    def current(self) -> SessionRecord:
        """The record with the fields this process owns while it holds the session: token usage
        and last activity from the live half."""
        return msgspec.structs.replace(
            self.record,
            token_usage=self.live.usage,
            last_activity_at=self.live.last_activity_at,
        )
