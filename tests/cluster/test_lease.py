"""Session leases against a real valkey-server: one owner, expiry, fencing of a late owner."""

from __future__ import annotations

import asyncio

import pytest

from diminuendo.fleet.connection import Fenced
from diminuendo.fleet.lease import Lease, LeaseRenewer
from tests.cluster.conftest import Fleet

SESSION = "ses_feedfacefeedface"
SHORT_TTL_MS = 300


async def test_one_owner_at_a_time_and_each_acquisition_gets_a_new_fence(fleet: Fleet) -> None:
    a, b = fleet.leases("inst-a"), fleet.leases("inst-b")
    first = await a.acquire(SESSION, 10_000)
    assert first is not None and first.token == f"{first.fence}:inst-a"
    assert await b.acquire(SESSION, 10_000) is None
    assert await b.holder(SESSION) == first.token
    assert await a.acquire(SESSION, 10_000) == first  # ours already: renewed, same token

    assert not await b.release(Lease(SESSION, f"{first.fence}:inst-b", 10_000))  # not b's
    assert await b.holder(SESSION) == first.token
    assert await a.release(first) and await a.holder(SESSION) is None
    second = await b.acquire(SESSION, 10_000)
    assert second is not None and second.fence > first.fence
    assert not await a.renew(first)  # a's old lease is gone for good


async def test_a_lease_not_renewed_expires_and_another_instance_takes_it(fleet: Fleet) -> None:
    a, b = fleet.leases("inst-a"), fleet.leases("inst-b")
    held = await a.acquire(SESSION, SHORT_TTL_MS)
    assert held is not None
    lease_key = fleet.keys.session(SESSION).lease
    await asyncio.sleep(SHORT_TTL_MS / 1000 / 2)
    assert await fleet.client.pttl(lease_key) <= SHORT_TTL_MS / 2
    assert await a.renew(held)  # a whole TTL again
    assert SHORT_TTL_MS / 2 < await fleet.client.pttl(lease_key) <= SHORT_TTL_MS
    assert await b.acquire(SESSION, SHORT_TTL_MS) is None
    await asyncio.sleep(SHORT_TTL_MS / 1000 + 0.1)  # no renewal for longer than the TTL
    taken = await b.acquire(SESSION, 10_000)
    assert taken is not None and not await a.renew(held)


async def test_a_paused_old_owner_cannot_append_after_a_new_owner_took_over(fleet: Fleet) -> None:
    """The fencing token: A stops renewing (paused), its lease expires, B acquires and appends;
    when A wakes up its append is refused, and the stream stays contiguous under B."""
    a, b = fleet.leases("inst-a"), fleet.leases("inst-b")
    old = await a.acquire(SESSION, SHORT_TTL_MS)
    assert old is not None
    _, epoch = await fleet.log.append(SESSION, b"from-a-1", owner_token=old.token)
    await asyncio.sleep(SHORT_TTL_MS / 1000 + 0.1)  # A is paused past its lease
    new = await b.acquire(SESSION, 10_000)
    assert new is not None
    assert await fleet.log.append(SESSION, b"from-b-2", owner_token=new.token) == (2, epoch)

    with pytest.raises(Fenced) as refused:
        await fleet.log.append(SESSION, b"from-a-late", owner_token=old.token)
    assert refused.value.holder == new.token

    assert await fleet.log.append(SESSION, b"from-b-3", owner_token=new.token) == (3, epoch)
    read = await fleet.log.read_after(SESSION, 0)
    assert [(e.seq, e.payload) for e in read.events] == [
        (1, b"from-a-1"),
        (2, b"from-b-2"),
        (3, b"from-b-3"),
    ]


async def test_appending_without_a_lease_is_refused(fleet: Fleet) -> None:
    with pytest.raises(Fenced) as refused:
        await fleet.log.append(SESSION, b"x", owner_token="1:nobody")
    assert refused.value.holder == "" and await fleet.log.meta(SESSION) is None


async def test_the_renewer_keeps_leases_alive_and_reports_a_lost_one(fleet: Fleet) -> None:
    a, b = fleet.leases("inst-a"), fleet.leases("inst-b")
    lost: list[Lease] = []
    ttl_ms = 2 * SHORT_TTL_MS  # renewed every 200 ms: a loaded machine stays within the TTL
    renewer = LeaseRenewer(a, ttl_ms, lost.append)
    kept = await a.acquire("ses_kept", ttl_ms)
    stolen = await a.acquire("ses_stolen", ttl_ms)
    assert kept is not None and stolen is not None
    renewer.hold(kept)
    renewer.hold(stolen)
    task = asyncio.create_task(renewer.run())
    try:
        await asyncio.sleep(ttl_ms / 1000 * 2.5)  # well past the TTL: renewed meanwhile
        assert await b.acquire("ses_kept", ttl_ms) is None
        assert lost == []
        await fleet.client.delete(fleet.keys.session("ses_stolen").lease)
        assert await b.acquire("ses_stolen", 10_000) is not None
        await asyncio.sleep(ttl_ms / 1000)  # at least two ticks
        assert lost == [stolen] and renewer.held == [kept]
    finally:
        task.cancel()
