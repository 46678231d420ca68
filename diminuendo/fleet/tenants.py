"""A tenant's lifecycle broadcasts and record caches across instances (fleet mode): the glue
between `broadcasts.TenantBroadcasts` and this process's `Hub`, `RecordStore` and
`MemberService`. It is their caches' `CacheScope`.

- A lifecycle event announced here (`announce`, the `SessionService` broadcast) reaches this
  process's connections at once, as without Valkey, and is published for the other instances
  in the background (Valkey down: logged, the others see the change on their next list).
- Every write of a session record or a member record is sent to the other instances before the
  write returns (`changed`); there the cached copy goes (a member's open connections take the
  stored role, as after a local change).
- A tenant's channel is followed while this process has a WebSocket of the tenant (`Hub`) or
  has read its records lately (`trusted` asked for it less than `FOLLOW_UNUSED_S` ago: REST,
  SSE, RPC and the edge adapters use the caches without a WebSocket). A cache keeps and answers
  copies of a tenant only while it is `trusted`: followed, the subscription confirmed and
  nothing lost since, and the tenant's copies dropped after the confirmation — so no change
  made elsewhere can be missed. The first reads of a tenant go to Unison while the
  subscription is set up; a tenant no longer followed has its copies dropped.
- A reconnect of the subscriber (`on_gap`) drops the copies of the tenants concerned; they are
  trusted again from then on.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from diminuendo.fleet.broadcasts import TenantBroadcasts
from diminuendo.fleet.connection import FleetUnavailable
from diminuendo.gateway.hub import Hub
from diminuendo.members import MemberService
from diminuendo.protocol.events import ServerFrame
from diminuendo.sessions.records import RecordStore
from diminuendo.sessions.stream import Subscriber

if TYPE_CHECKING:
    from diminuendo.fleet.runtime import Fleet

__all__ = ["TenantLinks"]

FOLLOW_UNUSED_S = 60.0
"""A tenant without a WebSocket here stays followed this long after its last cached read, so a
REST client's requests do not subscribe and unsubscribe the channel each time."""


class TenantLinks:
    def __init__(
        self, fleet: Fleet, hub: Hub, records: RecordStore, members: MemberService
    ) -> None:
        self._fleet = fleet
        self._hub = hub
        self._records = records
        self._members = members
        self._broadcasts = TenantBroadcasts(
            fleet.client,
            fleet.url,
            fleet.keys,
            fleet.instance_id,
            on_invalidate=self._invalidated,
            on_gap=self._gap,
            bus=fleet.bus,
        )
        self._connected: set[str] = set()  # tenants with a WebSocket here
        self._read: dict[str, float] = {}  # tenants followed for their caches → last read
        self._trusted: set[str] = set()  # followed, copies dropped since the subscription
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeping: asyncio.Task[None] | None = None
        hub.on_tenant = self._tenant
        records.scope = members.scope = self

    def __repr__(self) -> str:
        return f"TenantLinks(watched={len(self._broadcasts.watched)})"

    async def start(self) -> None:
        await self._broadcasts.start()
        self._sweeping = asyncio.create_task(self._sweep(), name="fleet-tenant-sweep")

    async def close(self) -> None:
        for task in [*self._tasks, self._sweeping]:
            if task is not None:
                task.cancel()
        await self._broadcasts.close()

    # ----- CacheScope -------------------------------------------------------------------------

    def trusted(self, tenant_id: str) -> bool:
        following = tenant_id in self._connected or tenant_id in self._read
        if tenant_id not in self._connected:
            self._read[tenant_id] = time.monotonic()
        if not following:
            self._follow(tenant_id)
            return False
        return tenant_id in self._trusted and self._broadcasts.live(tenant_id)

    async def changed(self, tenant_id: str, record: str, key: str) -> None:
        if not self._fleet.availability.use_valkey:
            return  # degraded: no wait per write for a Valkey that is known to be away
        try:
            await self._broadcasts.invalidate(tenant_id, record, key)
        except FleetUnavailable as exc:
            self._fleet.availability.failed(exc)
            logger.warning("{} change not sent to the other instances: {}", record, exc)

    # ----- broadcasts -------------------------------------------------------------------------

    def announce(
        self, tenant_id: str, owner_id: str, event: ServerFrame, exclude: Subscriber | None
    ) -> None:
        self._hub.broadcast(tenant_id, owner_id, event, exclude)  # type: ignore[arg-type]
        body = msgspec.to_builtins(event)
        self._background(self._broadcasts.publish(tenant_id, owner_id, body), "broadcast")

    def _tenant(self, tenant_id: str, present: bool) -> None:
        if present:
            self._connected.add(tenant_id)
            if tenant_id not in self._read:
                self._follow(tenant_id)
        else:
            self._connected.discard(tenant_id)
            if tenant_id not in self._read:
                self._unfollow(tenant_id)

    def _follow(self, tenant_id: str) -> None:
        async def watch() -> None:
            await self._broadcasts.watch(tenant_id, self._deliverer(tenant_id))
            self._gap(frozenset([tenant_id]))  # copies made before it may have missed changes

        self._background(watch(), "watch")

    def _unfollow(self, tenant_id: str) -> None:
        self._trusted.discard(tenant_id)
        self._forget(tenant_id)
        self._background(self._broadcasts.unwatch(tenant_id), "unwatch")

    def _deliverer(self, tenant_id: str) -> Any:
        def deliver(owner_id: str, event: dict[str, Any]) -> None:
            self._hub.broadcast(tenant_id, owner_id, event, None)

        return deliver

    def _invalidated(self, tenant_id: str, record: str, key: str) -> None:
        if record == "session":
            self._records.forget(tenant_id, key)
        elif record == "member":
            self._background(self._members.changed_elsewhere(tenant_id, key), "member change")

    def _gap(self, tenant_ids: frozenset[str]) -> None:
        """The tenants' subscriptions are live again (or for the first time): changes made
        elsewhere before may have been missed, so their copies go; from now on none is."""
        for tenant_id in tenant_ids:
            self._forget(tenant_id)
            if tenant_id in self._connected or tenant_id in self._read:
                self._trusted.add(tenant_id)

    def _forget(self, tenant_id: str) -> None:
        self._records.forget_tenant(tenant_id)
        self._members.forget_tenant(tenant_id)

    async def _sweep(self) -> None:
        """Stop following the tenants read lately but not any more (and without a WebSocket)."""
        while True:
            await asyncio.sleep(FOLLOW_UNUSED_S / 4)
            now = time.monotonic()
            for tenant_id, last in list(self._read.items()):
                if now - last > FOLLOW_UNUSED_S:
                    del self._read[tenant_id]
                    if tenant_id not in self._connected:
                        self._unfollow(tenant_id)

    def _background(self, work: Any, what: str) -> None:
        async def run() -> None:
            try:
                await work
            except FleetUnavailable as exc:
                self._fleet.availability.failed(exc)
                logger.warning("tenant {} not sent to the other instances: {}", what, exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
