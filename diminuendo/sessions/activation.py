"""Which sessions this process holds live, and how they come and go: activation (a capacity slot,
then the Podium instance and its runtime socket), deactivation, the idle sweep and shutdown.

Deactivation closes the runtime socket but keeps the Podium instance, so the durable transcript
survives idle periods and restarts; only deleting the session deletes the instance.
"""

from __future__ import annotations

import time
import uuid

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
from diminuendo.sessions.stream import SessionStream
from diminuendo.upstreams.podium import PodiumClient

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

    def __repr__(self) -> str:
        return f"Activator(active={len(self.active)}, draining={self.draining})"

    def refuse_when_draining(self) -> None:
        if self.draining:
            raise GatewayError(ErrorCode.DRAINING)

    def hold(self, record: SessionRecord, version: int) -> ActiveSession:
        """The session's live half in a new epoch, held (not yet activated)."""
        stream = SessionStream(
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
        return active

    async def activate(self, active: ActiveSession) -> None:
        """inactive/error → activating → ready: attach to (or create) the Podium instance."""
        async with active.lock:
            if active.status in (SessionStatus.READY, *BUSY):
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
            active.live.set_status(SessionStatus.READY)
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
        if active.status == SessionStatus.INACTIVE:
            await active.driver.close()
            return
        active.live.set_status(SessionStatus.DEACTIVATING, reason)
        await active.driver.close()
        active.live.set_status(SessionStatus.INACTIVE, reason)
        self.persister.persist(active)

    async def forget(self, session_id: str) -> None:
        """The session is being deleted: drop its live half, if this process holds one."""
        active = self.active.get(session_id)
        if active is None:
            return
        self._release(active)
        await active.driver.close()
        active.live.set_status(SessionStatus.DEACTIVATING, "deleted")

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
