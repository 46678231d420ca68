"""Tenant broadcasts and cache invalidations between instances through a real valkey-server:
delivered to every other instance that serves the tenant, never echoed, never across tenants."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from diminuendo.fleet.broadcasts import TenantBroadcasts
from diminuendo.fleet.connection import FleetUnavailable
from diminuendo.local.ports import free_port
from tests.cluster.conftest import Fleet, make_fleet
from tests.cluster.test_valkey_trouble import until

CREATED = {"type": "session_created", "session": {"id": "ses_1", "name": "plan"}}


class Instance:
    """One instance's broadcasts and what reached its callbacks."""

    def __init__(self, fleet: Fleet, instance_id: str) -> None:
        self.delivered: list[tuple[str, str, dict[str, Any]]] = []  # (tenant, owner, event)
        self.invalidated: list[tuple[str, str, str]] = []
        self.gaps: list[frozenset[str]] = []
        self.broadcasts = TenantBroadcasts(
            fleet.client,
            fleet.url,
            fleet.keys,
            instance_id,
            on_invalidate=lambda *args: self.invalidated.append(args),
            on_gap=self.gaps.append,
        )

    async def watch(self, tenant_id: str) -> None:
        await self.broadcasts.watch(
            tenant_id, lambda owner, event: self.delivered.append((tenant_id, owner, event))
        )


@pytest.fixture
async def instances(fleet: Fleet) -> AsyncIterator[tuple[Instance, Instance, Instance]]:
    a, b, c = (Instance(fleet, name) for name in ("inst-a", "inst-b", "inst-c"))
    for instance in (a, b, c):
        await instance.broadcasts.start()
    yield a, b, c
    for instance in (a, b, c):
        await instance.broadcasts.close()


async def test_a_broadcast_reaches_the_tenants_other_instances_only(instances) -> None:
    a, b, c = instances
    await a.watch("tenant-1")
    await b.watch("tenant-1")
    await c.watch("tenant-2")
    assert await a.broadcasts.publish("tenant-1", "user-1", CREATED) == 2  # A and B subscribe
    await until(lambda: b.delivered == [("tenant-1", "user-1", CREATED)])
    await asyncio.sleep(0.1)
    assert a.delivered == [] and c.delivered == []  # no echo; no other tenant


async def test_an_invalidation_reaches_the_other_instances_caches(instances) -> None:
    a, b, c = instances
    for instance in instances:
        await instance.watch("tenant-1")
    await b.broadcasts.invalidate("tenant-1", "session", "ses_1")
    await until(lambda: a.invalidated == c.invalidated == [("tenant-1", "session", "ses_1")])
    assert b.invalidated == [] and a.delivered == []


async def test_a_message_naming_another_tenant_is_not_delivered(instances, fleet) -> None:
    """The wall holds even against a message on the wrong channel: the receiver maps the
    channel to its tenant and drops a body that names another one."""
    a, b, _ = instances
    await b.watch("tenant-1")
    await b.watch("tenant-1:x")  # names that could collide if a channel were parsed
    forged = b'{"type":"b","origin":"inst-a","tenant_id":"tenant-2","owner_id":"u","event":{}}'
    await fleet.client.publish(fleet.keys.tenant_channel("tenant-1"), forged)
    await fleet.client.publish(fleet.keys.tenant_channel("tenant-1"), b"junk")
    await a.broadcasts.publish("tenant-1:x", "user-9", CREATED)
    await until(lambda: len(b.delivered) == 1)
    await asyncio.sleep(0.1)
    assert b.delivered == [("tenant-1:x", "user-9", CREATED)]


async def test_an_unwatched_tenant_is_no_longer_delivered(instances) -> None:
    a, b, _ = instances
    await b.watch("tenant-1")
    await b.broadcasts.unwatch("tenant-1")
    assert b.broadcasts.watched == frozenset()
    assert await a.broadcasts.publish("tenant-1", "user-1", CREATED) == 0
    await b.broadcasts.invalidate("tenant-1", "session", "ses_1")
    await asyncio.sleep(0.1)
    assert b.delivered == [] and b.invalidated == []


async def test_a_reconnect_reports_the_tenants_whose_messages_may_be_lost(instances, fleet) -> None:
    _, b, _ = instances
    await b.watch("tenant-1")
    await b.watch("tenant-2")
    await fleet.client.client_kill_filter(_type="pubsub")
    await until(lambda: b.gaps == [frozenset({"tenant-1", "tenant-2"})], timeout_s=5)
    await fleet.client.publish(
        fleet.keys.tenant_channel("tenant-2"),
        b'{"type":"i","origin":"inst-a","tenant_id":"tenant-2","record":"listing","key":"u"}',
    )
    await until(lambda: b.invalidated == [("tenant-2", "listing", "u")])


async def test_valkey_down_is_a_fast_clear_error_and_watching_resumes_later() -> None:
    fleet = await make_fleet(f"redis://127.0.0.1:{free_port()}/0")
    instance = Instance(fleet, "inst-a")
    await instance.broadcasts.start()
    try:
        started = time.monotonic()
        with pytest.raises(FleetUnavailable):
            await instance.watch("tenant-1")
        with pytest.raises(FleetUnavailable):
            await instance.broadcasts.publish("tenant-1", "user-1", CREATED)
        assert time.monotonic() - started < 2.5
        assert instance.broadcasts.watched == frozenset({"tenant-1"})
    finally:
        await instance.broadcasts.close()
        await fleet.client.aclose()


async def test_a_tenant_is_live_only_while_nothing_on_its_channel_can_be_missed(
    instances, fleet
) -> None:
    """`live` is what a cache trusts: false before the subscription is confirmed, true after,
    false from a lost connection until the resubscription's gap has been reported."""
    _, b, _ = instances
    assert not b.broadcasts.live("tenant-1")
    await b.watch("tenant-1")
    assert b.broadcasts.live("tenant-1")
    await fleet.client.client_kill_filter(_type="pubsub")
    await until(lambda: not b.broadcasts.live("tenant-1"), timeout_s=5)
    await until(lambda: b.gaps == [frozenset({"tenant-1"})], timeout_s=5)
    assert b.broadcasts.live("tenant-1")
    await b.broadcasts.unwatch("tenant-1")
    assert not b.broadcasts.live("tenant-1")
