"""SessionService: every session operation, shared by the WebSocket, REST and RPC edges — a thin
façade over the parts that do the work, one concept each:

- `access.py`: who may reach a session, and its record or live half for them;
- `records.py`: the Unison records (cache, compare-and-set writer, background persistence);
- `activation.py`: which sessions this process holds live, activation, capacity, deactivation;
- `live.py` + `driver.py`: a held session's turn state machine and the runtime socket feeding it;
- `turns.py`: the commands that need the runtime (run, stop, steer, answer), or its owner;
- `stream.py`: its sequenced, replayable stream of frames;
- `transcript.py`: history and files, read from the Podium instance.

Tenancy is decided in one place, `access.py` (`authorize`): another tenant's session (or, for
guests, another user's) is `SESSION_NOT_FOUND`, exactly as a missing one. The gateway itself
announces `turn_started` when it accepts a turn, and drops the runtime's own start event for it.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import may_read_session
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.events import (
    ServerFrame,
    SessionArchived,
    SessionCreated,
    SessionDeleted,
    SessionMeta,
    SessionUnarchived,
    SessionUpdated,
)
from diminuendo.protocol.models import SessionRecord
from diminuendo.sessions.access import SessionAccess
from diminuendo.sessions.activation import Activator
from diminuendo.sessions.active import ActiveSession
from diminuendo.sessions.budget import ReplayBudget
from diminuendo.sessions.capacity import Limits
from diminuendo.sessions.live import now_ms
from diminuendo.sessions.records import Persister, RecordStore
from diminuendo.sessions.stream import Replay, ReplayPager, Subscriber
from diminuendo.sessions.transcript import Transcript
from diminuendo.sessions.turns import Turns
from diminuendo.sessions.views import (
    events_page,
    logged_events_page,
    session_meta,
    session_view,
    snapshot,
)
from diminuendo.upstreams.podium import PodiumClient
from diminuendo.upstreams.unison import UnisonClient

__all__ = ["Broadcast", "SessionService"]

Broadcast = Callable[[str, str, ServerFrame, Subscriber | None], None]
"""`(tenant_id, owner_id, event, exclude)`: a lifecycle event about a session of `owner_id`, for
the tenant's connections that may read it (`Hub.broadcast`)."""


class SessionService:
    def __init__(
        self,
        *,
        podium: PodiumClient,
        unison: UnisonClient,
        max_active_sessions: int = 5000,
        max_active_sessions_per_tenant: int = 1000,
        idle_timeout_s: float = 900.0,
        replay_max_events: int = 10_000,
        replay_max_bytes: int = 8 * 1024 * 1024,
        replay_budget_bytes: int = 512 * 1024 * 1024,
        reply_max_bytes: int = 1024 * 1024,
        broadcast: Broadcast | None = None,
    ) -> None:
        self.podium = podium
        self.records = RecordStore(unison)
        self.activation = Activator(
            podium=podium,
            persister=Persister(self.records),
            limits=Limits(max_active_sessions, max_active_sessions_per_tenant),
            idle_timeout_s=idle_timeout_s,
            replay_max_events=replay_max_events,
            replay_max_bytes=replay_max_bytes,
            replay_budget=ReplayBudget(replay_budget_bytes),
        )
        self.access = SessionAccess(self.records, self.activation)
        self.turns = Turns(self.access, self.activation)
        # The runtime commands are the turns' own, as they are (turns.py).
        self.run_turn = self.turns.run_turn
        self.stop_turn = self.turns.stop_turn
        self.steer = self.turns.steer
        self.answer = self.turns.answer
        self.transcript = Transcript(podium, reply_max_bytes)
        self.reply_max_bytes = reply_max_bytes
        # Replaced in fleet mode by one that also tells the other instances (`fleet.tenants`).
        self.broadcast: Broadcast = broadcast or (lambda tenant, owner, event, exclude: None)
        # The live sessions, by id (read by health and metrics).
        self.active: dict[str, ActiveSession] = self.activation.active
        # Fleet mode (`Fleet.held_elsewhere`): which of these sessions another instance holds.
        self.held_elsewhere: Callable[[list[str]], Awaitable[set[str]]] | None = None

    def __repr__(self) -> str:
        return f"SessionService(active={len(self.active)})"

    @property
    def cached_records(self) -> int:
        """Session records held for reads (bounded by RECORD_CACHE_ENTRIES)."""
        return len(self.records)

    @property
    def events_published(self) -> int:
        """Frames published on every session's stream since start."""
        return self.activation.published.n

    @property
    def draining(self) -> bool:
        return self.activation.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.activation.draining = value

    def _live_view(self, record: SessionRecord) -> dict[str, Any]:
        return session_view(record, self.active.get(record.id))

    def _meta(self, record: SessionRecord) -> SessionMeta:
        return session_meta(record, self.active.get(record.id))

    async def _update(
        self, identity: Identity, session_id: str, change: Callable[[SessionRecord], None]
    ) -> SessionRecord:
        record, version = await self.records.update(
            lambda: self.access.record(identity, session_id), change, identity.user_id
        )
        active = self.active.get(session_id)
        if active is not None:
            active.record, active.version = record, version
        return record

    def _announce(
        self, record: SessionRecord, event: ServerFrame, requester: Subscriber | None
    ) -> None:
        """A lifecycle event for the tenant's other connections that may read the session."""
        self.broadcast(record.tenant_id, record.owner_id, event, requester)

    # ----- listing and lifecycle --------------------------------------------------------------

    async def list_sessions(
        self, identity: Identity, include_archived: bool = False
    ) -> list[dict[str, Any]]:
        sessions = await self._stored_views(
            [
                record
                for record in await self.records.list(identity.tenant_id)
                if (include_archived or not record.archived)
                and may_read_session(identity, record.tenant_id, record.owner_id)
            ]
        )
        sessions.sort(key=lambda s: s["lastActivityAt"], reverse=True)
        return sessions

    async def get_session(self, identity: Identity, session_id: str) -> dict[str, Any]:
        record, _ = await self.access.record(identity, session_id)
        return (await self._stored_views([record]))[0]

    async def _stored_views(self, records: list[SessionRecord]) -> list[dict[str, Any]]:
        """Views of records as read: a session held by another instance (fleet mode: one
        round trip for all) shows the state its owner stored, not `inactive`."""
        elsewhere: set[str] = set()
        if self.held_elsewhere is not None:
            idle = [record.id for record in records if record.id not in self.active]
            if idle:
                elsewhere = await self.held_elsewhere(idle)
        return [
            session_view(r, self.active.get(r.id), held_elsewhere=r.id in elsewhere)
            for r in records
        ]

    async def create_session(
        self,
        identity: Identity,
        agent_type: str,
        *,
        name: str | None = None,
        project_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        requester: Subscriber | None = None,
    ) -> dict[str, Any]:
        self.activation.refuse_when_draining()
        deployment_id = await self.podium.resolve_deployment(agent_type)
        if deployment_id is None:
            raise GatewayError(ErrorCode.INVALID_MESSAGE, f"Unknown agent type `{agent_type[:64]}`")
        ts = now_ms()
        record = SessionRecord(
            id=f"ses_{uuid.uuid4().hex}",
            tenant_id=identity.tenant_id,
            owner_id=identity.user_id,
            agent_type=agent_type,
            name=name,
            project_id=project_id,
            created_at=ts,
            updated_at=ts,
            last_activity_at=ts,
            metadata=metadata,
            deployment_id=deployment_id,
        )
        await self.records.write(record, None, identity.user_id)
        meta = self._meta(record)
        self._announce(record, SessionCreated(session=meta), requester)
        return msgspec.to_builtins(meta)

    async def rename_session(
        self, identity: Identity, session_id: str, name: str, requester: Subscriber | None = None
    ) -> dict[str, Any]:
        def rename(record: SessionRecord) -> None:
            record.name = name

        record = await self._update(identity, session_id, rename)
        meta = self._meta(record)
        self._announce(record, SessionUpdated(session=meta), requester)
        return msgspec.to_builtins(meta)

    async def set_archived(
        self,
        identity: Identity,
        session_id: str,
        archived: bool,
        requester: Subscriber | None = None,
    ) -> dict[str, Any]:
        def archive(record: SessionRecord) -> None:
            record.archived = archived

        record = await self._update(identity, session_id, archive)
        kind = SessionArchived if archived else SessionUnarchived
        self._announce(record, kind(session_id=session_id), requester)
        return self._live_view(record)

    async def delete_session(
        self, identity: Identity, session_id: str, requester: Subscriber | None = None
    ) -> None:
        record, _ = await self.access.record(identity, session_id)
        await self.activation.forget(session_id)
        if record.instance_id:
            await self.podium.delete_instance(record.instance_id)
        await self.records.delete(record, identity.user_id)
        self._announce(record, SessionDeleted(session_id=session_id), requester)

    async def sweep_idle(self) -> None:
        """Deactivate sessions idle longer than the idle timeout (called periodically)."""
        await self.activation.sweep_idle()

    async def shutdown(self) -> None:
        """Close every runtime socket without stopping instances (turns continue in Podium)."""
        await self.activation.shutdown()

    # ----- subscriptions ----------------------------------------------------------------------

    async def join(
        self,
        identity: Identity,
        subscriber: Subscriber,
        session_id: str,
        *,
        after_seq: int | None,
        epoch: str | None,
        send: Callable[[dict[str, Any], Replay], None],
        page_frames: int | None = None,
        page_bytes: int | None = None,
        replay_rest: Callable[[ReplayPager], Awaitable[None]] | None = None,
    ) -> ReplayPager:
        """Subscribe and activate. `send(snapshot, replay)` is called synchronously right after
        the stream attach so the caller enqueues snapshot → replay before any live frame.

        With `page_frames`/`page_bytes`, `replay` is only the first page of what the subscriber
        missed when it is longer than that: the pager is then not yet `attached`, and the
        caller hands out its further pages as the subscriber drains
        (`SessionStream.attach_page`) — in `replay_rest(pager)`, awaited after the activation
        whether or not it succeeded (a failed activation still leaves the subscriber joined, as
        an unpaged join does). Without them the whole replay comes at once."""
        active = await self.access.held(identity, session_id)
        await self.activation.caught_up(active, after_seq)  # fleet: a copy waits for the log
        # Joining again restarts the subscription: live frames must not interleave with pages.
        active.stream.detach(subscriber)
        pager = ReplayPager(
            active.stream,
            subscriber,
            after_seq,
            epoch,
            max_frames=page_frames or sys.maxsize,
            max_bytes=page_bytes or sys.maxsize,
        )
        replay = pager.next_page()
        active.subscribers.add(subscriber)
        send(snapshot(active, replay), replay)
        try:
            await self.activation.activate(active)
        finally:
            if replay_rest is not None and not pager.attached:
                await replay_rest(pager)
        return pager

    def unreadable(self, identity: Identity, session_ids: Iterable[str]) -> list[str]:
        """Those of the active `session_ids` that `identity` may not read (after a role change)."""
        unreadable = []
        for session_id in session_ids:
            active = self.active.get(session_id)
            record = active.record if active is not None else None
            if record is not None and not may_read_session(
                identity, record.tenant_id, record.owner_id
            ):
                unreadable.append(session_id)
        return unreadable

    def leave(self, session_id: str, subscriber: Subscriber) -> None:
        active = self.active.get(session_id)
        if active is not None:
            active.stream.detach(subscriber)
            active.subscribers.discard(subscriber)
            active.last_used = time.monotonic()

    async def events(
        self, identity: Identity, session_id: str, after_seq: int, epoch: str | None, limit: int
    ) -> dict[str, Any]:
        record, _ = await self.access.record(identity, session_id)
        active = self.active.get(session_id)
        if active is None:
            logged = await self.activation.read_log(session_id, after_seq, epoch, limit)
            if logged is not None:
                return logged_events_page(record, logged, limit, self.reply_max_bytes)
        return events_page(record, active, after_seq, epoch, limit, self.reply_max_bytes)

    # ----- history and files ------------------------------------------------------------------

    async def _instance_id(self, identity: Identity, session_id: str) -> str | None:
        record, _ = await self.access.record(identity, session_id)
        return record.instance_id

    async def history(
        self, identity: Identity, session_id: str, *, limit: int, before: str | None
    ) -> dict[str, Any]:
        instance_id = await self._instance_id(identity, session_id)
        return await self.transcript.history(session_id, instance_id, limit=limit, before=before)

    async def list_files(
        self, identity: Identity, session_id: str, path: str, depth: int
    ) -> dict[str, Any]:
        instance_id = await self._instance_id(identity, session_id)
        return await self.transcript.list_files(session_id, instance_id, path, depth)

    async def read_file(
        self, identity: Identity, session_id: str, path: str, iteration: int | None = None
    ) -> dict[str, Any]:
        instance_id = await self._instance_id(identity, session_id)
        return await self.transcript.read_file(session_id, instance_id, path, iteration)

    async def file_history(self, identity: Identity, session_id: str, path: str) -> dict[str, Any]:
        instance_id = await self._instance_id(identity, session_id)
        return await self.transcript.file_history(session_id, instance_id, path)
