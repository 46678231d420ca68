"""SessionService: every session operation, shared by the WebSocket, REST and RPC edges.

The service owns the in-memory half of a session (`ActiveSession`: status, stream, runtime socket,
current turn) and writes the durable half (the `SessionRecord`) to Unison on lifecycle changes
only, in the background, so no client event waits on a metadata write. Tenancy is enforced here:
every lookup goes through `_record`, which answers `SESSION_NOT_FOUND` for another tenant's
session exactly as for a missing one.

Decisions (see docs/PROTOCOL-NOTES.md): deactivation closes the runtime socket but keeps the
Podium instance, so the durable transcript survives idle periods and restarts; only
`delete_session` deletes the instance. The gateway itself announces `turn_started` when it
accepts a turn, and drops the runtime's own start event for that turn.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from loguru import logger

from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import may_read_session
from diminuendo.mapping import Unknown, map_event
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.models import SessionRecord, TokenUsage
from diminuendo.sessions.budget import ReplayBudget
from diminuendo.sessions.capacity import Admission, Limits, admission, choose_victim
from diminuendo.sessions.coalesce import DeltaCoalescer
from diminuendo.sessions.state import IllegalTransition, SessionStatus, transition
from diminuendo.sessions.stream import Replay, SessionStream, Subscriber
from diminuendo.upstreams.podium import PodiumClient, RuntimeConnection
from diminuendo.upstreams.resilience import backoff_delay
from diminuendo.upstreams.unison import CasConflict, Entry, UnisonClient, sessions_namespace

RECORD_CACHE_S = 5.0
RECORD_CACHE_ENTRIES = 50_000
LISTING_CACHE_TENANTS = 1_000
PERSIST_CONCURRENCY = 16
PERSIST_DEBOUNCE_S = 0.2
PERSIST_RETRIES = 20  # with backoff capped at 5 s: about a minute of Unison outage
_BUSY = (SessionStatus.RUNNING, SessionStatus.WAITING)

Broadcast = Callable[[str, str, dict[str, Any], Subscriber | None], None]
"""`(tenant_id, owner_id, event, exclude)`: a lifecycle event about a session of `owner_id`, for
the tenant's connections that may read it (`Hub.broadcast`)."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Turn:
    turn_id: str
    text: str
    started_at: int
    client_turn_id: str | None = None
    output: list[str] = field(default_factory=list)


@dataclass(eq=False)
class ActiveSession:
    record: SessionRecord
    version: int
    stream: SessionStream
    status: SessionStatus = SessionStatus.INACTIVE
    runtime: RuntimeConnection | None = None
    turn: Turn | None = None
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscribers: set[Subscriber] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    writing: bool = False
    dirty: bool = False
    deltas: DeltaCoalescer = field(default_factory=DeltaCoalescer)
    delta_timer: asyncio.TimerHandle | None = None
    holds_slot: bool = False  # counted against MAX_ACTIVE_SESSIONS and its tenant's quota

    @property
    def idle(self) -> bool:
        return not self.subscribers and self.status not in _BUSY


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
        broadcast: Broadcast | None = None,
    ) -> None:
        self.podium = podium
        self.unison = unison
        self.capacity = Limits(max_active_sessions, max_active_sessions_per_tenant)
        # Active sessions per tenant (only tenants holding some) and in all, kept in step by
        # _take_slot/_free_slot so admitting a session costs no walk over every session.
        self._held: dict[str, int] = {}
        self._held_total = 0
        self.idle_timeout_s = idle_timeout_s
        self._replay_limits = {"max_events": replay_max_events, "max_bytes": replay_max_bytes}
        self.replay_budget = ReplayBudget(replay_budget_bytes)
        self._broadcast: Broadcast = broadcast or (lambda tenant, owner, event, exclude: None)
        self.active: dict[str, ActiveSession] = {}
        self._records: OrderedDict[str, tuple[float, int, SessionRecord]] = OrderedDict()
        self._listings: OrderedDict[str, list[Entry]] = OrderedDict()
        self._unknown_events: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self.draining = False
        self.events_published = 0
        self._persist_slots = asyncio.Semaphore(PERSIST_CONCURRENCY)

    def __repr__(self) -> str:
        return f"SessionService(active={len(self.active)})"

    @property
    def cached_records(self) -> int:
        """Session records held for reads (bounded by RECORD_CACHE_ENTRIES)."""
        return len(self._records)

    # ----- records (Unison) -------------------------------------------------------------------

    async def _record(self, identity: Identity, session_id: str) -> tuple[SessionRecord, int]:
        """The caller's view of a session: another tenant's (or, for guests, another user's)
        session is indistinguishable from a missing one."""
        active = self.active.get(session_id)
        if active is not None:
            record, version = active.record, active.version
        else:
            cached = self._records.get(session_id)
            if cached and time.monotonic() - cached[0] < RECORD_CACHE_S:
                _, version, record = cached
            else:
                try:
                    entry = await self.unison.get(
                        sessions_namespace(identity.tenant_id), session_id
                    )
                except GatewayError as exc:
                    if cached is None or exc.code != ErrorCode.UPSTREAM_UNAVAILABLE:
                        raise
                    _, version, record = cached  # Unison is down: a stale copy is safe to read
                else:
                    if entry is None:
                        self._records.pop(session_id, None)
                        raise GatewayError(ErrorCode.SESSION_NOT_FOUND, session_id=session_id)
                    record = msgspec.convert(entry.value, SessionRecord)
                    version = entry.version
                    self._remember(record, version)
        if not may_read_session(identity, record.tenant_id, record.owner_id):
            raise GatewayError(ErrorCode.SESSION_NOT_FOUND, session_id=session_id)
        return record, version

    def _live_view(self, record: SessionRecord) -> dict[str, Any]:
        """SessionMeta as clients see it: status, epoch and lastSeq from the live stream when
        active; a session this process does not hold is reported `inactive` (start-up recovery
        of records a previous process left in another state)."""
        wire = record.to_wire()
        active = self.active.get(record.id)
        if active is None:
            wire["status"] = SessionStatus.INACTIVE.value
        else:
            wire["status"] = active.status.value
            wire["epoch"] = active.stream.epoch
            wire["lastSeq"] = active.stream.last_seq
        return wire

    async def _write(self, record: SessionRecord, version: int | None, actor: str) -> int:
        entry = await self.unison.put(
            sessions_namespace(record.tenant_id),
            record.id,
            msgspec.to_builtins(record),
            actor=actor,
            cas=version,
        )
        self._remember(record, entry.version)
        return entry.version

    def _remember(self, record: SessionRecord, version: int) -> None:
        """Bounded record cache: fresh for RECORD_CACHE_S, kept longer as a stale fallback."""
        self._records[record.id] = (time.monotonic(), version, record)
        self._records.move_to_end(record.id)
        if len(self._records) > RECORD_CACHE_ENTRIES:
            self._records.popitem(last=False)

    async def _update(
        self,
        identity: Identity,
        session_id: str,
        change: Callable[[SessionRecord], None],
    ) -> SessionRecord:
        """Read-modify-write with compare-and-set; on conflict re-read and re-apply."""
        for _ in range(5):
            record, version = await self._record(identity, session_id)
            record = msgspec.structs.replace(record)
            change(record)
            record.updated_at = now_ms()
            try:
                version = await self._write(record, version, identity.user_id)
            except CasConflict:
                self._records.pop(session_id, None)
                continue
            active = self.active.get(session_id)
            if active is not None:
                active.record, active.version = record, version
            return record
        raise GatewayError(ErrorCode.UPSTREAM_ERROR, "Session changed concurrently, try again")

    def _persist(self, active: ActiveSession) -> None:
        """Write the active session's lifecycle fields in the background, coalescing bursts."""
        if active.writing:
            active.dirty = True
            return
        active.writing = True
        self._spawn(self._persist_loop(active))

    async def _persist_loop(self, active: ActiveSession) -> None:
        """At most PERSIST_CONCURRENCY record writes are in flight: thousands of sessions changing
        state at once must not flood the HTTP pool that client requests and health probes share
        (measured: an unbounded burst livelocked the gateway in httpcore's pool scan)."""
        failures = 0
        try:
            while True:
                await asyncio.sleep(PERSIST_DEBOUNCE_S)  # one write for a burst of transitions
                active.dirty = False
                record = msgspec.structs.replace(
                    active.record,
                    status=active.status.value,
                    epoch=active.stream.epoch,
                    last_seq=active.stream.last_seq,
                    updated_at=now_ms(),
                )
                try:
                    # The in-memory record may change while the write is under way, so it is
                    # not replaced by what was written; only the version moves on.
                    async with self._persist_slots:
                        active.version = await self._write(record, active.version, "diminuendo")
                except CasConflict as conflict:
                    if conflict.current is None:
                        return  # deleted meanwhile
                    # Someone else wrote (a rename elsewhere): take their user-owned fields,
                    # keep the fields this process owns while it holds the session.
                    mine = active.record
                    active.record = msgspec.structs.replace(
                        msgspec.convert(conflict.current.value, SessionRecord),
                        token_usage=mine.token_usage,
                        instance_id=mine.instance_id,
                        deployment_id=mine.deployment_id,
                        last_activity_at=mine.last_activity_at,
                    )
                    active.version = conflict.current.version
                    active.dirty = True
                except GatewayError as exc:
                    failures += 1
                    if failures > PERSIST_RETRIES:
                        logger.error("giving up persisting session {}: {}", active.record.id, exc)
                        return
                    logger.warning("could not persist session {} yet: {}", active.record.id, exc)
                    await asyncio.sleep(backoff_delay(failures, base=0.5, cap=5.0))
                    active.dirty = True
                if not active.dirty:
                    return
        finally:
            active.writing = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _announce(
        self, record: SessionRecord, event: dict[str, Any], requester: Subscriber | None
    ) -> None:
        """A lifecycle event for the tenant's other connections that may read the session."""
        self._broadcast(record.tenant_id, record.owner_id, event, requester)

    # ----- listing and lifecycle --------------------------------------------------------------

    async def list_sessions(
        self, identity: Identity, include_archived: bool = False
    ) -> list[dict[str, Any]]:
        tenant = identity.tenant_id
        try:
            entries = await self.unison.list(sessions_namespace(tenant))
        except GatewayError as exc:
            stale = self._listings.get(tenant)
            if stale is None or exc.code != ErrorCode.UPSTREAM_UNAVAILABLE:
                raise
            entries = stale  # Unison is down: serve the last listing we saw
        else:
            self._listings[tenant] = entries
            self._listings.move_to_end(tenant)
            if len(self._listings) > LISTING_CACHE_TENANTS:
                self._listings.popitem(last=False)
        sessions = []
        for entry in entries:
            record = msgspec.convert(entry.value, SessionRecord)
            if record.archived and not include_archived:
                continue
            if not may_read_session(identity, record.tenant_id, record.owner_id):
                continue
            sessions.append(self._live_view(record))
        sessions.sort(key=lambda s: s["lastActivityAt"], reverse=True)
        return sessions

    async def get_session(self, identity: Identity, session_id: str) -> dict[str, Any]:
        record, _ = await self._record(identity, session_id)
        return self._live_view(record)

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
        self._refuse_when_draining()
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
        await self._write(record, None, identity.user_id)
        wire = self._live_view(record)
        self._announce(record, {"type": "session_created", "session": wire}, requester)
        return wire

    async def rename_session(
        self, identity: Identity, session_id: str, name: str, requester: Subscriber | None = None
    ) -> dict[str, Any]:
        def rename(record: SessionRecord) -> None:
            record.name = name

        record = await self._update(identity, session_id, rename)
        wire = self._live_view(record)
        self._announce(record, {"type": "session_updated", "session": wire}, requester)
        return wire

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
        kind = "session_archived" if archived else "session_unarchived"
        self._announce(record, {"type": kind, "sessionId": session_id}, requester)
        return self._live_view(record)

    async def delete_session(
        self, identity: Identity, session_id: str, requester: Subscriber | None = None
    ) -> None:
        record, _ = await self._record(identity, session_id)
        active = self.active.pop(session_id, None)
        if active is not None:
            self._free_slot(active)
            active.stream.close()
            if active.runtime is not None:
                await active.runtime.close()
            self._publish_state(active, SessionStatus.DEACTIVATING, "deleted")
        if record.instance_id:
            await self.podium.delete_instance(record.instance_id)
        await self.unison.delete(
            sessions_namespace(identity.tenant_id), session_id, actor=identity.user_id
        )
        self._records.pop(session_id, None)
        self._announce(record, {"type": "session_deleted", "sessionId": session_id}, requester)

    # ----- activation -------------------------------------------------------------------------

    async def _ensure_active(self, identity: Identity, session_id: str) -> ActiveSession:
        """The session's live half, created (but not yet activated) if this process lacks it."""
        active = self.active.get(session_id)
        if active is None:
            record, version = await self._record(identity, session_id)
            active = self.active.get(session_id)  # another task may have won the race
            if active is None:
                stream = SessionStream(
                    session_id,
                    uuid.uuid4().hex[:16],
                    **self._replay_limits,
                    budget=self.replay_budget,
                )
                active = ActiveSession(record=record, version=version, stream=stream)
                self.active[session_id] = active
        else:
            await self._record(identity, session_id)  # tenancy check
        active.last_used = time.monotonic()
        return active

    async def _activate(self, active: ActiveSession) -> None:
        """inactive/error → activating → ready: attach to (or create) the Podium instance."""
        async with active.lock:
            if active.status in (SessionStatus.READY, *_BUSY):
                return
            self._refuse_when_draining()
            victim = self._admit(active)
            if victim is not None:
                await self.deactivate(victim, "capacity")
            self._publish_state(active, SessionStatus.ACTIVATING)
            if active.runtime is not None:  # left over from a failed turn
                await active.runtime.close()
                active.runtime = None
            try:
                runtime = await self._connect_runtime(active)
            except GatewayError as exc:
                self._publish_state(active, SessionStatus.ERROR, exc.message)
                self._persist(active)
                raise
            active.runtime = runtime
            self._publish_state(active, SessionStatus.READY)
            self._persist(active)

    async def _connect_runtime(self, active: ActiveSession) -> RuntimeConnection:
        record = active.record
        instance_id = record.instance_id
        if instance_id and not await self.podium.instance_exists(instance_id):
            instance_id = None
        if instance_id is None:
            deployment_id = record.deployment_id or await self.podium.resolve_deployment(
                record.agent_type
            )
            if deployment_id is None:
                raise GatewayError(ErrorCode.UPSTREAM_ERROR, "The agent type is not deployed")
            instance_id = await self.podium.create_instance(
                deployment_id,
                metadata={
                    "tenant_id": record.tenant_id,
                    "session_id": record.id,
                    "user_id": record.owner_id,
                },
            )
            active.record = msgspec.structs.replace(
                record, instance_id=instance_id, deployment_id=deployment_id
            )
            # Recorded before the first turn, not debounced: a crash must not orphan the
            # instance that holds the session's transcript.
            async with self._persist_slots:
                try:
                    active.version = await self._write(active.record, active.version, "diminuendo")
                except CasConflict:
                    self._persist(active)  # someone renamed meanwhile: merge in the background

        async def lost(reason: str) -> None:
            await self._runtime_lost(active, reason)

        runtime = self.podium.runtime(
            instance_id,
            on_frame=lambda frame: self._on_runtime_frame(active, frame),
            on_lost=lost,
            on_attached=lambda running, reconnected: self._runtime_attached(
                active, running, reconnected
            ),
        )
        await runtime.open()
        return runtime

    def _admit(self, joining: ActiveSession) -> ActiveSession | None:
        """Take a capacity slot for `joining` (sessions/capacity.py), or raise QUOTA_EXCEEDED /
        CAPACITY_EXCEEDED. Returns the idle session to deactivate for it, if one must go.
        Synchronous, so concurrent activations never count the same free slot twice."""
        if joining.holds_slot:
            return None
        tenant = joining.record.tenant_id
        need = admission(tenant, self._held, self._held_total, self.capacity)
        victim = None
        if need is not Admission.ADMIT:
            idle = (
                (a.record.tenant_id, a.last_used, a)
                for a in self.active.values()
                if a.holds_slot and a.idle and not a.lock.locked()
            )
            victim = choose_victim(tenant, self._held, idle, need)
            if victim is None and need is Admission.FREE_OWN:
                raise GatewayError(
                    ErrorCode.QUOTA_EXCEEDED,
                    f"Your tenant has {self._held.get(tenant, 0)} active sessions, its limit;"
                    " leave one and it makes room for the next",
                )
            if victim is None:
                raise GatewayError(ErrorCode.CAPACITY_EXCEEDED)
            self._free_slot(victim)
        self._take_slot(joining)
        return victim

    def _take_slot(self, active: ActiveSession) -> None:
        active.holds_slot = True
        tenant = active.record.tenant_id
        self._held[tenant] = self._held.get(tenant, 0) + 1
        self._held_total += 1

    def _free_slot(self, active: ActiveSession) -> None:
        if not active.holds_slot:
            return
        active.holds_slot = False
        tenant = active.record.tenant_id
        left = self._held[tenant] - 1
        if left:
            self._held[tenant] = left
        else:
            del self._held[tenant]
        self._held_total -= 1

    async def deactivate(self, active: ActiveSession, reason: str) -> None:
        """Close the runtime socket (the instance and its turns stay in Podium) and forget the
        live half; the next join starts a new epoch."""
        self._free_slot(active)
        if self.active.get(active.record.id) is active:
            del self.active[active.record.id]
            active.stream.close()
        if active.status == SessionStatus.INACTIVE:
            return
        self._publish_state(active, SessionStatus.DEACTIVATING, reason)
        if active.runtime is not None:
            await active.runtime.close()
            active.runtime = None
        self._publish_state(active, SessionStatus.INACTIVE, reason)
        self._persist(active)

    async def sweep_idle(self) -> None:
        """Deactivate sessions idle longer than the idle timeout (called periodically)."""
        cutoff = time.monotonic() - self.idle_timeout_s
        for active in list(self.active.values()):
            if active.idle and active.last_used < cutoff:
                await self.deactivate(active, "idle")

    async def shutdown(self) -> None:
        """Close every runtime socket without stopping instances (turns continue in Podium)."""
        for active in list(self.active.values()):
            if active.runtime is not None:
                await active.runtime.close()
        for task in list(self._background):
            try:
                async with asyncio.timeout(2):
                    await task
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()

    def _refuse_when_draining(self) -> None:
        if self.draining:
            raise GatewayError(ErrorCode.DRAINING)

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
    ) -> None:
        """Subscribe and activate. `send(snapshot, replay)` is called synchronously right after
        the stream attach so the caller enqueues snapshot → replay before any live frame."""
        active = await self._ensure_active(identity, session_id)
        replay = active.stream.attach(subscriber, after_seq, epoch)
        active.subscribers.add(subscriber)
        send(self._snapshot(active, replay), replay)
        await self._activate(active)

    def _snapshot(self, active: ActiveSession, replay: Replay) -> dict[str, Any]:
        snapshot: dict[str, Any] = {
            "type": "state_snapshot",
            "sessionId": active.record.id,
            "session": self._live_view(active.record),
            "epoch": replay.epoch,
            "lastSeq": replay.last_seq,
            "gap": replay.gap,
            "pending": list(active.pending.values()),
        }
        if active.turn is not None:
            snapshot["currentTurn"] = {
                "turnId": active.turn.turn_id,
                "text": "".join(active.turn.output),
                "startedAt": active.turn.started_at,
            }
        return snapshot

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
        record, _ = await self._record(identity, session_id)
        active = self.active.get(session_id)
        if active is None:
            # Nothing retained in this process: anything after `after_seq` is a gap.
            stale = epoch not in (None, record.epoch) or after_seq < record.last_seq
            return {
                "sessionId": session_id,
                "epoch": record.epoch,
                "events": [],
                "lastSeq": record.last_seq,
                "gap": stale,
            }
        replay = active.stream.replay(after_seq, epoch, limit)
        return {
            "sessionId": session_id,
            "epoch": replay.epoch,
            "events": [msgspec.json.decode(f.data) for f in replay.frames],
            "lastSeq": replay.last_seq,
            "gap": replay.gap,
        }

    # ----- turns ------------------------------------------------------------------------------

    async def run_turn(
        self,
        identity: Identity,
        session_id: str,
        text: str,
        client_turn_id: str | None = None,
        *,
        on_accept: Callable[[str], None] | None = None,
    ) -> Turn:
        """Accept a turn (activating first if needed). `on_accept(turn_id)` runs just before the
        `turn_started` event is published, so an edge can mark its copy as the reply."""
        self._refuse_when_draining()
        active = await self._ensure_active(identity, session_id)
        if active.status in _BUSY or active.turn is not None:
            raise GatewayError(ErrorCode.SESSION_BUSY, session_id=session_id)
        await self._activate(active)
        if active.status in _BUSY or active.turn is not None:
            raise GatewayError(ErrorCode.SESSION_BUSY, session_id=session_id)
        turn = Turn(f"trn_{uuid.uuid4().hex}", text, now_ms(), client_turn_id)
        active.turn = turn
        self._publish_state(active, SessionStatus.RUNNING)
        if on_accept is not None:
            on_accept(turn.turn_id)
        started: dict[str, Any] = {"type": "turn_started", "turnId": turn.turn_id}
        if client_turn_id is not None:
            started["clientTurnId"] = client_turn_id
        self._publish(active, started, now_ms())
        assert active.runtime is not None
        try:
            await active.runtime.send(
                {
                    "type": "process_message",
                    "content": {"text": text, "turn_id": turn.turn_id, "messages": []},
                }
            )
        except GatewayError as exc:
            self._end_turn_with_error(active, exc.code, exc.message, SessionStatus.ERROR)
            raise
        # Not written to Unison now: `running` is a live state only the instance holding the
        # session knows (instances are tenant-sticky), and the turn's end writes status,
        # lastActivityAt, usage and lastSeq. One write per turn instead of two.
        active.record.last_activity_at = turn.started_at
        return turn

    async def stop_turn(self, identity: Identity, session_id: str) -> None:
        await self._record(identity, session_id)  # tenancy
        active = self.active.get(session_id)
        if active is not None and active.turn is not None and active.runtime is not None:
            await active.runtime.send(
                {"type": "interrupt", "content": {"turn_id": active.turn.turn_id}}
            )

    async def steer(self, identity: Identity, session_id: str, content: str) -> None:
        active = await self._running(identity, session_id)
        assert active.runtime is not None
        await active.runtime.send({"type": "steer", "content": {"text": content}})

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
        active = await self._running(identity, session_id)
        if request_id not in active.pending:
            raise GatewayError(
                ErrorCode.INVALID_STATE,
                "No pending question with that requestId",
                session_id=session_id,
            )
        assert active.runtime is not None
        await active.runtime.send(
            {
                "type": "answer",
                "content": {
                    "request_id": request_id,
                    "answers": answers or {},
                    "approved": approved,
                    "dismissed": dismissed,
                },
            }
        )

    async def _running(self, identity: Identity, session_id: str) -> ActiveSession:
        await self._record(identity, session_id)  # tenancy
        active = self.active.get(session_id)
        if active is None or active.turn is None or active.runtime is None:
            raise GatewayError(ErrorCode.INVALID_STATE, "No turn is running", session_id=session_id)
        return active

    # ----- runtime events ---------------------------------------------------------------------

    def _on_runtime_frame(self, active: ActiveSession, frame: dict[str, Any]) -> None:
        """Hot path: one runtime frame → at most one client event on the session's stream."""
        event = map_event(frame)
        if event is None:
            return
        if isinstance(event, Unknown):
            if event.name not in self._unknown_events:
                self._unknown_events.add(event.name)
                logger.debug("ignoring runtime event {!r}", event.name)
            return
        kind = event["type"]
        if kind == "text_delta":
            self._on_delta(active, event)
            return
        if kind == "turn_started":
            return  # the gateway announced the turn when it accepted it
        self._flush_deltas(active)
        turn = active.turn
        if kind in ("question_requested", "permission_requested"):
            active.pending[event.get("requestId", "")] = event
            self._publish(active, event, now_ms())
            self._publish_state(active, SessionStatus.WAITING)
        elif kind == "approval_resolved":
            active.pending.pop(event.get("requestId", ""), None)
            self._publish(active, event, now_ms())
            if not active.pending and active.status == SessionStatus.WAITING:
                self._publish_state(active, SessionStatus.RUNNING)
        elif kind in ("turn_complete", "turn_error"):
            if turn is not None and event.get("turnId") not in (None, turn.turn_id):
                self._publish(active, event, now_ms())  # about a turn we never accepted
                return
            if kind == "turn_complete" and event.get("usage"):
                usage = event["usage"]
                self._add_usage(active, usage.get("inputTokens"), usage.get("outputTokens"))
            self._publish(active, event, now_ms())
            if turn is not None:
                self._finish_turn(active, SessionStatus.READY)
        else:
            if kind == "usage_update":
                self._add_usage(active, event.get("inputTokens"), event.get("outputTokens"))
            self._publish(active, event, now_ms())

    def _on_delta(self, active: ActiveSession, event: dict[str, Any]) -> None:
        if active.turn is not None:
            active.turn.output.append(event.get("text", ""))
        loop = asyncio.get_running_loop()
        for ready in active.deltas.push(event, loop.time()):
            self._publish(active, ready, now_ms())
        if active.deltas.pending and active.delta_timer is None:
            active.delta_timer = loop.call_at(active.deltas.deadline, self._deltas_due, active)

    def _deltas_due(self, active: ActiveSession) -> None:
        active.delta_timer = None
        merged = active.deltas.due(asyncio.get_running_loop().time())
        if merged is not None:
            self._publish(active, merged, now_ms())
        if active.deltas.pending:
            active.delta_timer = asyncio.get_running_loop().call_at(
                active.deltas.deadline, self._deltas_due, active
            )

    def _flush_deltas(self, active: ActiveSession) -> None:
        """Publish held text before any other event, so the stream keeps runtime order."""
        if active.delta_timer is not None:
            active.delta_timer.cancel()
            active.delta_timer = None
        merged = active.deltas.flush()
        if merged is not None:
            self._publish(active, merged, now_ms())

    def _publish(self, active: ActiveSession, event: dict[str, Any], ts_ms: int) -> None:
        active.stream.publish(event, ts_ms)
        self.events_published += 1

    def _add_usage(self, active: ActiveSession, inputs: Any, outputs: Any) -> None:
        usage = active.record.token_usage
        active.record.token_usage = TokenUsage(
            input=usage.input + (inputs if isinstance(inputs, int) else 0),
            output=usage.output + (outputs if isinstance(outputs, int) else 0),
        )

    def _finish_turn(self, active: ActiveSession, status: SessionStatus) -> None:
        active.turn = None
        active.pending.clear()
        if active.status == SessionStatus.WAITING and status == SessionStatus.READY:
            self._publish_state(active, SessionStatus.RUNNING)  # waiting → ready is not a move
        active.record.last_activity_at = now_ms()
        self._publish_state(active, status)
        self._persist(active)

    def _end_turn_with_error(
        self, active: ActiveSession, code: ErrorCode, message: str, status: SessionStatus
    ) -> None:
        self._flush_deltas(active)
        if active.turn is not None:
            self._publish(
                active,
                {
                    "type": "turn_error",
                    "turnId": active.turn.turn_id,
                    "code": code.value,
                    "message": message,
                },
                now_ms(),
            )
        self._finish_turn(active, status)

    def _runtime_attached(
        self, active: ActiveSession, running_turn_id: str | None, reconnected: bool
    ) -> None:
        """Podium's hello names the turn its runtime is running. A turn we do not know about
        (started before this gateway process, e.g. across a restart) is adopted, so it stays
        busy and can be stopped; after a reconnect, our turn missing from the runtime means
        Podium restarted and lost it: end it now rather than wait for events that never come."""
        turn = active.turn
        if turn is None:
            if running_turn_id is not None and active.status == SessionStatus.READY:
                active.turn = Turn(running_turn_id, "", now_ms())
                self._publish_state(active, SessionStatus.RUNNING, "turn in progress")
        elif reconnected and running_turn_id != turn.turn_id:
            logger.warning(
                "session {}: runtime restarted, turn {} lost", active.record.id, turn.turn_id
            )
            self._end_turn_with_error(
                active,
                ErrorCode.UPSTREAM_UNAVAILABLE,
                "The agent runtime restarted and the turn was lost",
                SessionStatus.READY,
            )

    async def _runtime_lost(self, active: ActiveSession, reason: str) -> None:
        logger.warning("runtime of session {} lost: {}", active.record.id, reason)
        active.runtime = None
        self._end_turn_with_error(
            active, ErrorCode.UPSTREAM_UNAVAILABLE, reason, SessionStatus.ERROR
        )

    def _publish_state(
        self, active: ActiveSession, status: SessionStatus, reason: str | None = None
    ) -> None:
        previous = active.status
        if previous == status:
            return
        try:
            active.status = transition(previous, status)
        except IllegalTransition:
            # A bug, never a crash: log it and keep the session usable in the requested state.
            logger.error("illegal session transition {} → {}", previous, status)
            active.status = status
        event: dict[str, Any] = {
            "type": "session_state",
            "state": status.value,
            "previous": previous.value,
        }
        if reason:
            event["reason"] = reason
        self._publish(active, event, now_ms())

    # ----- history and files ------------------------------------------------------------------

    async def history(
        self, identity: Identity, session_id: str, *, limit: int, before: str | None
    ) -> dict[str, Any]:
        instance_id = await self._instance_id(identity, session_id)
        if not instance_id:
            return {"sessionId": session_id, "messages": [], "hasMore": False}
        body = await self.podium.messages(instance_id, limit=limit, before=before)
        return {
            "sessionId": session_id,
            "messages": [_history_message(m) for m in body.get("messages", [])],
            "hasMore": bool(body.get("has_more")),
        }

    async def _instance_id(self, identity: Identity, session_id: str) -> str | None:
        record, _ = await self._record(identity, session_id)
        active = self.active.get(session_id)
        return active.record.instance_id if active else record.instance_id

    async def _instance(self, identity: Identity, session_id: str) -> str:
        instance_id = await self._instance_id(identity, session_id)
        if not instance_id:
            raise GatewayError(ErrorCode.FILE_NOT_FOUND, session_id=session_id)
        return instance_id

    async def list_files(
        self, identity: Identity, session_id: str, path: str, depth: int
    ) -> dict[str, Any]:
        instance_id = await self._instance_id(identity, session_id)
        entries: list[dict[str, Any]] = []
        if instance_id:
            body = await self.podium.files(instance_id, path=path, depth=depth)
            entries = [
                {
                    "path": e.get("path"),
                    "type": e.get("type"),
                    "size": e.get("size"),
                    "modifiedAt": e.get("modified_at"),
                }
                for e in body.get("entries", [])
            ]
        return {"sessionId": session_id, "path": path, "entries": entries}

    async def read_file(
        self, identity: Identity, session_id: str, path: str, iteration: int | None = None
    ) -> dict[str, Any]:
        instance_id = await self._instance(identity, session_id)
        body = await self.podium.file(instance_id, path, iteration=iteration)
        if body is None:
            raise GatewayError(ErrorCode.FILE_NOT_FOUND, session_id=session_id)
        content: dict[str, Any] = {
            "sessionId": session_id,
            "path": body.get("path", path),
            "content": body.get("content", ""),
            "encoding": body.get("encoding", "utf-8"),
            "size": body.get("size", 0),
        }
        if iteration is not None:
            content["iteration"] = body.get("iteration", iteration)
        return content

    async def file_history(self, identity: Identity, session_id: str, path: str) -> dict[str, Any]:
        instance_id = await self._instance(identity, session_id)
        body = await self.podium.file_history(instance_id, path)
        if body is None:
            raise GatewayError(ErrorCode.FILE_NOT_FOUND, session_id=session_id)
        return {"sessionId": session_id, "path": path, "iterations": body.get("iterations", [])}


def _history_message(raw: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": raw.get("id"),
        "role": raw.get("role"),
        "text": raw.get("text", ""),
        "turnId": raw.get("turn_id"),
        "ts": raw.get("ts"),
    }
    if raw.get("tool_calls"):
        message["toolCalls"] = [
            {
                "toolCallId": call.get("tool_call_id"),
                "toolName": call.get("tool_name"),
                "args": call.get("args"),
                "output": call.get("output"),
            }
            for call in raw["tool_calls"]
        ]
    return message
