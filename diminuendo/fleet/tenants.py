"""A tenant's lifecycle broadcasts and record caches across instances (fleet mode): the glue
between `broadcasts.TenantBroadcasts` and this process's `Hub` and `RecordStore`.

- A lifecycle event announced here (`announce`, the `SessionService` broadcast) reaches this
  process's connections at once, as without Valkey, and is published for the other instances
  in the background (Valkey down: logged, the others see the change on their next list).
- The Hub follows (`watch`) a tenant's channel from its first connection of that tenant to its
  last (`unwatch`, which drops the tenant's cached records: no change of them reaches this
  process any more). An event from another instance goes to `Hub.broadcast`, which decides who
  may read it as for a local one, and drops the cached record of the session it names: the
  broadcast is the invalidation.
- A reconnect of the subscriber (`on_gap`) drops the cached records of the tenants concerned.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from diminuendo.fleet.broadcasts import TenantBroadcasts
from diminuendo.fleet.connection import FleetUnavailable
from diminuendo.gateway.hub import Hub
from diminuendo.protocol.events import ServerFrame
from diminuendo.sessions.records import RecordStore
from diminuendo.sessions.stream import Subscriber

if TYPE_CHECKING:
    from diminuendo.fleet.runtime import Fleet

__all__ = ["TenantLinks"]


class TenantLinks:
    def __init__(self, fleet: Fleet, hub: Hub, records: RecordStore) -> None:
        self._fleet = fleet
        self._hub = hub
        self._records = records
        self._broadcasts = TenantBroadcasts(
            fleet.client,
            fleet.url,
            fleet.keys,
            fleet.instance_id,
            on_invalidate=lambda tenant_id, record, key: records.forget(key),
            on_gap=self._gap,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        hub.on_tenant = self._tenant

    def __repr__(self) -> str:
        return f"TenantLinks(watched={len(self._broadcasts.watched)})"

    async def start(self) -> None:
        await self._broadcasts.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._broadcasts.close()

    def announce(
        self, tenant_id: str, owner_id: str, event: ServerFrame, exclude: Subscriber | None
    ) -> None:
        self._hub.broadcast(tenant_id, owner_id, event, exclude)  # type: ignore[arg-type]
        body = msgspec.to_builtins(event)
        self._background(self._broadcasts.publish(tenant_id, owner_id, body), "broadcast")

    def _tenant(self, tenant_id: str, present: bool) -> None:
        if present:
            self._background(self._broadcasts.watch(tenant_id, self._deliverer(tenant_id)), "watch")
        else:
            self._records.forget_tenant(tenant_id)
            self._background(self._broadcasts.unwatch(tenant_id), "unwatch")

    def _deliverer(self, tenant_id: str) -> Any:
        def deliver(owner_id: str, event: dict[str, Any]) -> None:
            session_id = event.get("sessionId") or (event.get("session") or {}).get("id")
            if isinstance(session_id, str):
                self._records.forget(session_id)
            self._hub.broadcast(tenant_id, owner_id, event, None)

        return deliver

    def _gap(self, tenant_ids: frozenset[str]) -> None:
        for tenant_id in tenant_ids:
            self._records.forget_tenant(tenant_id)

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
