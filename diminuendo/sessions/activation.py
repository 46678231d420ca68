"""Which sessions this process holds live, and how they come and go: activation (a capacity slot,
then the Podium instance and its runtime socket), deactivation, the idle sweep and shutdown.

Deactivation closes the runtime socket but keeps the Podium instance, so the durable transcript
survives idle periods and restarts; only deleting the session deletes the instance.

In fleet mode (`ownership`, docs/FLEET.md) a held session's stream is claimed from Valkey: this
instance takes the session's lease and continues its log (epoch, seqs, window), or falls back to
memory when Valkey is not in use. Leaving memory gives the lease back; losing it (expired, taken,
the log refused an append) stops the session here at once, without a frame or a record write —
another instance owns it now — and `on_moved` ends its subscriptions so their clients rejoin.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import msgspec

from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.models import SessionRecord
from diminuendo.sessions.active import ActiveSession
from diminuendo.sessions.budget import ReplayBudget
from diminuendo.sessions.capacity import Admission, Limits, Slots
from diminuendo.sessions.driver import RuntimeDriver
from diminuendo.sessions.live import BUSY, LiveSession, PublishCount
from diminuendo.sessions.records import Persister
from diminuendo.sessions.state import SessionStatus
from diminuendo.sessions.stream import SessionStream, Subscriber
from diminuendo.upstreams.podium import PodiumClient

if TYPE_CHECKING:  # fleet mode only: without REDIS_URL nothing of it is imported
    from diminuendo.fleet.ownership import Ownership
    from diminuendo.fleet.replay_log import Replay as LoggedReplay

__all__ = ["Activator"]


class Activator:
    def __init__(
        self,
        *,
        podium: PodiumClient,
        persister: Persister,
        limits: Limits,
        idle_timeout_s: float,
        replay_max_events: int,
        replay_max_bytes: int,
        replay_budget: ReplayBudget,
    ) -> None:
        self.podium = podium
        self.persister = persister
        self.slots = Slots(limits)
        self.idle_timeout_s = idle_timeout_s
        self._replay_max_events = replay_max_events
        self._replay_max_bytes = replay_max_bytes
        self.replay_budget = replay_budget
        self.active: dict[str, ActiveSession] = {}
        self.published = PublishCount()
        self.draining = False
        self._unknown_events: set[str] = set()
        self._ownership: Ownership | None = None
        self._on_moved: Callable[[set[Subscriber]], None] = lambda subscribers: None
        self._background_tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"Activator(active={len(self.active)}, draining={self.draining})"

    def join_fleet(self, ownership: Ownership, on_moved: Callable[[set[Subscriber]], None]) -> None:
        """Fleet mode (the gateway, at start-up with `REDIS_URL`): streams are claimed from
        Valkey; `on_moved(subscribers)` ends the subscriptions of a session lost to another
        instance."""
        self._ownership = ownership
        self._on_moved = on_moved
        ownership.on_lost = self._ownership_lost
        ownership.on_orphaned = self._orphaned

    def refuse_when_draining(self) -> None:
        if self.draining:
            raise GatewayError(ErrorCode.DRAINING)

    async def claim(self, record: SessionRecord) -> SessionStream | None:
        """Fleet mode: the session's stream continued from its log, this instance owning it;
        None without Valkey (then `hold` starts a new epoch in memory)."""
        if self._ownership is None:
            return None
        return await self._ownership.own(
            record.id,
            max_events=self._replay_max_events,
            max_bytes=self._replay_max_bytes,
            budget=self.replay_budget,
        )

    async def read_log(
        self, session_id: str, after_seq: int, epoch: str | None, limit: int
    ) -> LoggedReplay | None:
        """Fleet mode: a page of a session this instance does not hold, from its log in Valkey
        (any instance answers `get_events` as its owner would); None without Valkey."""
        if self._ownership is None:
            return None
        return await self._ownership.read_log(session_id, after_seq, epoch, limit)

    def hold(
        self, record: SessionRecord, version: int, stream: SessionStream | None = None
    ) -> ActiveSession:
        """The session's live half, held (not yet activated): on `stream` (from `claim`), or in
        a new epoch in memory."""
        stream = stream or SessionStream(
            record.id,
            uuid.uuid4().hex[:16],
            max_events=self._replay_max_events,
            max_bytes=self._replay_max_bytes,
            budget=self.replay_budget,
        )
        live = LiveSession(
            stream,
            usage=record.token_usage,
            last_activity_at=record.last_activity_at,
            count=self.published,
            on_turn_end=lambda: self.persister.persist(active),
        )
        driver = RuntimeDriver(live, self._unknown_events)
        active = ActiveSession(record=record, version=version, live=live, driver=driver)
        self.active[record.id] = active
        if self._ownership is not None:
            self._ownership.observe(stream, live.follow)
        return active

    def followed(self, active: ActiveSession) -> bool:
        """Fleet mode: another instance owns the session, this one holds a copy of its stream
        (no runtime socket here: its commands go to the owner)."""
        return self._ownership is not None and self._ownership.follows(active.stream)

    async def caught_up(self, active: ActiveSession, after_seq: int | None) -> None:
        """Before a join: a followed session's copy holds everything its log holds, and the
        frames up to `after_seq` the joining client saw from the owner (bounded wait)."""
        if self._ownership is not None:
            await self._ownership.caught_up(active.stream, after_seq)

    async def activate(self, active: ActiveSession) -> None:
        """inactive/error → activating → ready: attach to (or create) the Podium instance."""
        async with active.lock:
            if active.status in (SessionStatus.READY, *BUSY) or self.followed(active):
                return
            self.refuse_when_draining()
            victim = self._admit(active)
            if victim is not None:
                await self.deactivate(victim, "capacity")
            active.live.set_status(SessionStatus.ACTIVATING)
            await active.driver.close()  # a runtime left over from a failed turn
            try:
                await self._connect(active)
            except GatewayError as exc:
                active.live.set_status(SessionStatus.ERROR, exc.message)
                self.persister.persist(active)
                raise
            active.live.activated()
            self.persister.persist(active)

    async def _connect(self, active: ActiveSession) -> None:
        instance_id = active.record.instance_id
        if instance_id and not await self.podium.instance_exists(instance_id):
            instance_id = None
        if instance_id is None:
            instance_id = await self._create_instance(active)
        await active.driver.connect(self.podium, instance_id)

    async def _create_instance(self, active: ActiveSession) -> str:
        record = active.record
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
        # Recorded before the first turn, not debounced: a crash must not orphan the instance
        # that holds the session's transcript.
        await self.persister.write_now(active)
        return instance_id

    def _admit(self, joining: ActiveSession) -> ActiveSession | None:
        """Take a capacity slot for `joining` (sessions/capacity.py), or raise QUOTA_EXCEEDED /
        CAPACITY_EXCEEDED. Returns the idle session to deactivate for it, if one must go.
        Synchronous, so concurrent activations never count the same free slot twice."""
        if joining.holds_slot:
            return None
        tenant = joining.record.tenant_id
        need = self.slots.need(tenant)
        victim = None
        if need is not Admission.ADMIT:
            idle = (
                (a.record.tenant_id, a.last_used, a)
                for a in self.active.values()
                if a.holds_slot and a.idle and not a.lock.locked()
            )
            victim = self.slots.victim(tenant, idle, need)
            self._free_slot(victim)
        joining.holds_slot = True
        self.slots.take(tenant)
        return victim

    def _free_slot(self, active: ActiveSession) -> None:
        if active.holds_slot:
            active.holds_slot = False
            self.slots.free(active.record.tenant_id)

    def _release(self, active: ActiveSession) -> None:
        """Forget the live half: its slot, its place in `active`, its replay bytes."""
        self._free_slot(active)
        if self.active.get(active.record.id) is active:
            del self.active[active.record.id]
            active.stream.close()

    async def deactivate(self, active: ActiveSession, reason: str) -> None:
        """Close the runtime socket (the instance and its turns stay in Podium) and forget the
        live half; the next join starts a new epoch."""
        self._release(active)
        if active.status == SessionStatus.INACTIVE or self.followed(active):
            await active.driver.close()
        else:
            active.live.set_status(SessionStatus.DEACTIVATING, reason)
            await active.driver.close()
            active.live.set_status(SessionStatus.INACTIVE, reason)
            self.persister.persist(active)
        await self._give_back(active)

    async def _give_back(self, active: ActiveSession) -> None:
        """Fleet mode: the session's frames reach its log, then its lease is released."""
        if self._ownership is not None:
            await self._ownership.release(active.stream)

    def _orphaned(self, stream: SessionStream) -> None:
        """A followed session's owner is gone (died, or deactivated it): take it over if a
        client here follows it, else drop the copy (once at a time)."""
        active = self.active.get(stream.session_id)
        if active is None or active.stream is not stream or active.lock.locked():
            return
        if active.subscribers:
            self._background(self._take_over(active))
        else:
            self._background(self.deactivate(active, "owner gone"))

    async def _take_over(self, followed: ActiveSession) -> None:
        """Own a followed session whose owner died: its stream continued from the log, its
        subscribers moved to it without a duplicate or a hole, then its runtime re-attached
        (`LiveSession.runtime_attached` adopts the turn the dead owner left running)."""
        assert self._ownership is not None
        async with followed.lock:
            stream = await self._ownership.take_over(
                followed.stream,
                max_events=self._replay_max_events,
                max_bytes=self._replay_max_bytes,
                budget=self.replay_budget,
            )
        if stream is None or self.active.get(stream.session_id) is not followed:
            return
        self._release(followed)
        active = self.hold(followed.record, followed.version, stream)
        old, moved = followed.stream, set()
        for subscriber in followed.subscribers:
            old.detach(subscriber)
            replay = stream.attach(subscriber, old.last_seq, old.epoch)
            if replay.gap:  # the log is not the copy they saw: they rejoin
                stream.detach(subscriber)
                moved.add(subscriber)
                continue
            active.subscribers.add(subscriber)
            for frame in replay.frames:
                subscriber.deliver(frame)
        self._on_moved(moved)
        with suppress(GatewayError):  # `activate` recorded the error in the session's state
            await self.activate(active)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    def _ownership_lost(self, session_id: str, stream: SessionStream) -> None:
        """Another instance owns the session now: stop it here without a frame (the log is
        another's) or a record write, and end its subscriptions (their clients rejoin)."""
        active = self.active.get(session_id)
        if active is None or active.stream is not stream:
            return
        self._release(active)
        self._background(active.driver.close())
        subscribers, active.subscribers = active.subscribers, set()
        for subscriber in subscribers:
            stream.detach(subscriber)
        self._on_moved(subscribers)

    async def forget(self, session_id: str) -> None:
        """The session is being deleted: drop its live half, if this process holds one."""
        active = self.active.get(session_id)
        if active is None:
            return
        self._release(active)
        await active.driver.close()
        if not self.followed(active):
            active.live.set_status(SessionStatus.DEACTIVATING, "deleted")
        await self._give_back(active)

    async def sweep_idle(self) -> None:
        """Deactivate sessions idle longer than the idle timeout (called periodically)."""
        cutoff = time.monotonic() - self.idle_timeout_s
        for active in list(self.active.values()):
            if active.idle and active.last_used < cutoff:
                await self.deactivate(active, "idle")

    async def shutdown(self) -> None:
        """Close every runtime socket without stopping instances (turns continue in Podium), then
        let the record writes under way finish."""
        for active in list(self.active.values()):
            await active.driver.close()
        await self.persister.drain()
        if self._ownership is not None:
            await self._ownership.release_all()
