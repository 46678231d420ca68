"""Tenant broadcasts and cache invalidations across instances: a session created, renamed,
archived or deleted on one instance reaches the tenant's connections on every other one, and
their metadata caches drop the record that changed.

One pub/sub channel per tenant (`Keyspace.tenant_channel`), subscribed by an instance while it
has a connection of that tenant (`watch` on the first, `unwatch` after the last): Valkey routes
each message only to the instances that serve the tenant, and the wall between tenants is the
channel itself — a message reaches only the callback registered for the channel's tenant, and one
whose body names another tenant is dropped (docs/DECISIONS.md "Fleet (Valkey)" has the figures
of this choice against one channel for all tenants).

Contract of `TenantBroadcasts`:

- `watch(tenant_id, deliver)` registers the tenant's callback (replacing any earlier one) and
  subscribes; returns once the server confirmed, or raises `FleetUnavailable` after the 1 s bound
  (the callback stays registered, the bus subscribes when Valkey is back and reports the gap).
- `unwatch(tenant_id)` stops delivery at once; the caller drops the tenant's cached records,
  which no invalidation reaches any more.
- `live(tenant_id)`: the tenant's channel is subscribed and nothing on it can have been missed
  since (an `on_gap` of it would come first): only then may a cache trust its copies.
- `publish(tenant_id, owner_id, event)` sends a lifecycle event (the frame as a dict) to the
  other instances; each calls the tenant's `deliver(owner_id, event)`, which passes it to
  `Hub.broadcast` (who may read it is decided there, as for a local event). Never echoed to the
  sender, which has delivered it locally already.
- `invalidate(tenant_id, record, key)` tells the other instances that `record` (`"session"`,
  `"listing"`, …) `key` changed: each calls `on_invalidate(tenant_id, record, key)`.
- `on_gap(tenant_ids)`: the subscriber reconnected, so messages of those tenants may have been
  lost. Broadcasts are notifications (a client sees the change on its next list); the caller
  drops every cached record of those tenants, since an invalidation may be among the lost.
- `publish` and `invalidate` raise `FleetUnavailable` when Valkey cannot be reached in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import msgspec
from loguru import logger
from redis.asyncio import Redis

from diminuendo.fleet.bus import Bus, Lane
from diminuendo.fleet.connection import DEFAULT_TIMEOUT_S, unavailable_as
from diminuendo.fleet.keys import Keyspace

Deliver = Callable[[str, dict[str, Any]], None]
"""`(owner_id, event)`: a lifecycle event of one tenant for its connections on this instance."""

Invalidate = Callable[[str, str, str], None]
"""`(tenant_id, record, key)`: drop that cached record."""


class _Broadcast(msgspec.Struct, frozen=True, tag="b"):
    origin: str  # instance id of the sender
    tenant_id: str
    owner_id: str
    event: dict[str, Any]


class _Invalidation(msgspec.Struct, frozen=True, tag="i"):
    origin: str
    tenant_id: str
    record: str
    key: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Broadcast | _Invalidation).decode


class TenantBroadcasts:
    def __init__(
        self,
        client: Redis,
        url: str,
        keyspace: Keyspace,
        instance_id: str,
        *,
        on_invalidate: Invalidate,
        on_gap: Callable[[frozenset[str]], None],
        bus_timeout_s: float = DEFAULT_TIMEOUT_S,
        bus: Bus | None = None,
    ) -> None:
        self._client = client
        self._url = url
        self._keys = keyspace
        self.instance_id = instance_id
        self._on_invalidate = on_invalidate
        self._on_tenant_gap = on_gap
        self._tenants: dict[str, str] = {}  # channel → tenant id: the wall, never parsed
        self._deliver: dict[str, Deliver] = {}  # tenant id → its callback
        # The process's shared subscriber when given (`Fleet.bus`), else a connection of its own.
        self._bus: Bus | Lane = (
            bus.lane(self._on_message, self._on_gap)
            if bus is not None
            else Bus(url, on_message=self._on_message, on_gap=self._on_gap, timeout_s=bus_timeout_s)
        )
        self._bus_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._bus_task = asyncio.create_task(self._bus.run(), name="fleet-tenant-broadcasts")

    async def close(self) -> None:
        if self._bus_task is not None:
            self._bus_task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._bus_task
            self._bus_task = None

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(self._deliver)

    async def watch(self, tenant_id: str, deliver: Deliver) -> None:
        channel = self._keys.tenant_channel(tenant_id)
        self._tenants[channel] = tenant_id
        self._deliver[tenant_id] = deliver
        await self._bus.subscribe(channel)

    def live(self, tenant_id: str) -> bool:
        return self._bus.live(self._keys.tenant_channel(tenant_id))

    async def unwatch(self, tenant_id: str) -> None:
        channel = self._keys.tenant_channel(tenant_id)
        self._tenants.pop(channel, None)
        self._deliver.pop(tenant_id, None)
        await self._bus.unsubscribe(channel)

    async def publish(self, tenant_id: str, owner_id: str, event: dict[str, Any]) -> int:
        """Returns how many instances (the sender included, if it watches) received it."""
        return await self._send(
            tenant_id, _Broadcast(self.instance_id, tenant_id, owner_id, event), "broadcast"
        )

    async def invalidate(self, tenant_id: str, record: str, key: str) -> int:
        return await self._send(
            tenant_id, _Invalidation(self.instance_id, tenant_id, record, key), "invalidation"
        )

    async def _send(self, tenant_id: str, message: _Broadcast | _Invalidation, what: str) -> int:
        channel = self._keys.tenant_channel(tenant_id)
        with unavailable_as(self._url, what):
            return int(await self._client.publish(channel, _encode(message)))

    def _on_message(self, channel: str, data: bytes) -> None:
        tenant_id = self._tenants.get(channel)
        if tenant_id is None:
            return  # unwatched while the message was in flight
        try:
            message = _decode(data)
        except msgspec.DecodeError:  # ValidationError too
            logger.warning("tenant broadcast: dropped a malformed message ({} bytes)", len(data))
            return
        if message.origin == self.instance_id:
            return
        if message.tenant_id != tenant_id:
            logger.warning("tenant broadcast: dropped a message naming another tenant")
            return
        if isinstance(message, _Invalidation):
            self._on_invalidate(tenant_id, message.record, message.key)
            return
        deliver = self._deliver.get(tenant_id)
        if deliver is not None:
            deliver(message.owner_id, message.event)

    def _on_gap(self, channels: frozenset[str]) -> None:
        tenants = frozenset(self._tenants[c] for c in channels if c in self._tenants)
        if tenants:
            self._on_tenant_gap(tenants)
