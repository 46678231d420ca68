"""`Fleet`: the Valkey side of one gateway process, built in one place when `REDIS_URL` is set.

The `Gateway` imports this module only then, so a gateway without `REDIS_URL` never imports
redis-py and pays nothing for fleet mode. One client serves every command and script, and one
subscriber connection (`bus`, run here) every pub/sub channel of the process — its tenant
broadcasts, its inbox of forwarded commands and the sessions it follows. The instance id is new
per process (`Leases` requires it: a restarted process must not mistake its predecessor's leases
for its own) and is the `instanceId` of `/health`, so an operator can tell which instance owns what.

Contract:

- `start()` returns within the availability probe's bound (1 s) whatever Valkey does, and never
  raises: a gateway whose Valkey is down starts degraded (`availability`) and recovers by itself.
- `stop()` stops the renewal and releases the leases still held (best effort: a Valkey that is
  gone lets them expire after `SESSION_LEASE_TTL`), then closes the client.
- `ownership` is the sessions this instance owns (`ownership.Ownership`); a lease the renewer
  finds lost is reported to it.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from loguru import logger

from diminuendo.fleet.availability import FleetAvailability
from diminuendo.fleet.bus import Bus
from diminuendo.fleet.connection import FleetUnavailable, open_client
from diminuendo.fleet.keys import Keyspace
from diminuendo.fleet.lease import Lease, LeaseRenewer, Leases
from diminuendo.fleet.ownership import Ownership
from diminuendo.fleet.remote import RemoteCommands
from diminuendo.fleet.replay_log import ReplayLog
from diminuendo.fleet.tenants import TenantLinks
from diminuendo.gateway.hub import Hub
from diminuendo.members import MemberService
from diminuendo.sessions.service import SessionService
from diminuendo.settings import Settings

__all__ = ["Fleet"]


class Fleet:
    def __init__(self, settings: Settings, instance_id: str) -> None:
        url = settings.redis_url
        self.url = url
        self.instance_id = instance_id
        self.client = open_client(url)
        self.bus = Bus(url)  # before the parts that take a lane of it
        self.keys = Keyspace(settings.redis_key_prefix)
        self.lease_ttl_ms = max(int(settings.session_lease_ttl_s * 1000), 1)
        self.availability = FleetAvailability(self.client, url)
        self.leases = Leases(self.client, url, self.keys, instance_id)
        self.renewer = LeaseRenewer(self.leases, self.lease_ttl_ms, self._lease_lost)
        self.log = ReplayLog(
            self.client,
            url,
            self.keys,
            max_events=settings.replay_max_events,
            max_bytes=settings.replay_max_bytes,
            ttl_ms=max(int(settings.replay_ttl_s * 1000), 1),
        )
        self.ownership = Ownership(self)
        self.remote: RemoteCommands | None = None
        self.tenants: TenantLinks | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._subscribing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Fleet({self.instance_id}, mode={self.availability.report()['mode']})"

    def _lease_lost(self, lease: Lease) -> None:
        logger.warning("session {}: lease {} lost", lease.session_id, lease.token)
        self.ownership.lease_lost(lease)

    def serve(self, sessions: SessionService, hub: Hub, members: MemberService) -> None:
        """Join this process's sessions and connections to the fleet: run the commands other
        instances forward to the sessions this one owns and forward those of the sessions it
        follows (`remote`); share the tenants' lifecycle broadcasts and keep the session-record
        and member-role caches true across instances (`tenants`)."""
        self.remote = RemoteCommands(self, sessions.turns)
        sessions.turns.remote = self.remote
        self.tenants = TenantLinks(self, hub, sessions.records, members)
        sessions.broadcast = self.tenants.announce
        sessions.held_elsewhere = self.held_elsewhere

    async def held_elsewhere(self, session_ids: list[str]) -> set[str]:
        """Which of these sessions another instance holds (a live lease), in one round trip;
        none while Valkey is away (they read `inactive`, as on one instance)."""
        if not self.availability.use_valkey:
            return set()
        try:
            holders = await self.leases.holders(session_ids)
        except FleetUnavailable as exc:
            self.availability.failed(exc)
            return set()
        except ValueError:  # an id no lease can have (`Keyspace.session`)
            return set()
        mine = f":{self.instance_id}"
        return {
            session_id
            for session_id, holder in zip(session_ids, holders, strict=True)
            if holder is not None and not holder.endswith(mine)
        }

    async def start(self) -> None:
        self._subscribing = asyncio.create_task(self.bus.run(), name="fleet-pubsub")
        await self.availability.start()
        await self.ownership.start()
        if self.remote is not None:
            await self.remote.start()
        if self.tenants is not None:
            await self.tenants.start()
        self._renewing = asyncio.create_task(self.renewer.run(), name="fleet-lease-renewer")

    async def stop(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with suppress(asyncio.CancelledError):
                await self._renewing
            self._renewing = None
        if self.remote is not None:
            await self.remote.close()
        if self.tenants is not None:
            await self.tenants.close()
        await self.ownership.close()
        if self._subscribing is not None:
            self._subscribing.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._subscribing
            self._subscribing = None
        for lease in self.renewer.held:
            self.renewer.drop(lease.session_id)
            with suppress(FleetUnavailable):
                await self.leases.release(lease)
        await self.availability.close()
        await self.client.aclose()
