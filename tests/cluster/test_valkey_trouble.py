"""Valkey down, hung or restarted: every call fails fast with `FleetUnavailable` (no hang), a
lease that cannot be renewed is reported lost after its TTL, and the pub/sub bus resubscribes by
itself after a restart and reports the possible gap."""

from __future__ import annotations

import asyncio
import time

import pytest

from diminuendo.fleet.bus import Bus
from diminuendo.fleet.connection import FleetUnavailable
from diminuendo.fleet.lease import Lease, LeaseRenewer
from diminuendo.local.ports import free_port
from diminuendo.local.valkey import LocalValkey
from tests.cluster.conftest import make_fleet

SESSION = "ses_00000000deadbeef"


async def test_valkey_down_fails_fast_with_a_clear_error() -> None:
    url = f"redis://:sekrit@127.0.0.1:{free_port()}/0"  # nothing listens there
    fleet = await make_fleet(url)
    try:
        started = time.monotonic()
        with pytest.raises(FleetUnavailable) as down:
            await fleet.log.append(SESSION, b"x", owner_token="1:a")
        with pytest.raises(FleetUnavailable):
            await fleet.leases("a").acquire(SESSION, 1000)
        with pytest.raises(FleetUnavailable):
            await fleet.log.read_after(SESSION, 0)
        assert time.monotonic() - started < 1.0
        message = str(down.value)
        assert "append failed" in message and "127.0.0.1" in message
        assert "sekrit" not in message
    finally:
        await fleet.client.aclose()


async def test_a_hung_valkey_times_out_instead_of_hanging(own_valkey: LocalValkey) -> None:
    fleet = await make_fleet(own_valkey.url)
    try:
        lease = await fleet.leases("a").acquire(SESSION, 10_000)
        assert lease is not None
        own_valkey.pause()
        started = time.monotonic()
        with pytest.raises(FleetUnavailable) as hung:
            await fleet.log.append(SESSION, b"x", owner_token=lease.token)
        assert 0.9 < time.monotonic() - started < 3.0 and "timed out" in str(hung.value)
    finally:
        own_valkey.resume()
        await fleet.client.aclose()


async def test_a_lease_that_cannot_be_renewed_is_lost_after_its_ttl(
    own_valkey: LocalValkey,
) -> None:
    fleet = await make_fleet(own_valkey.url)
    leases = fleet.leases("a")
    lost: list[Lease] = []
    try:
        lease = await leases.acquire(SESSION, 300)
        assert lease is not None
        renewer = LeaseRenewer(leases, 300, lost.append)
        renewer.hold(lease)
        own_valkey.stop()
        await renewer.tick()  # within the TTL: not yet given up
        assert lost == []
        await asyncio.sleep(0.35)
        await renewer.tick()
        assert lost == [lease] and renewer.held == []
    finally:
        await fleet.client.aclose()


async def test_the_bus_resubscribes_after_a_restart_and_reports_the_gap(
    own_valkey: LocalValkey,
) -> None:
    received: list[tuple[str, bytes]] = []
    gaps: list[frozenset[str]] = []
    bus = Bus(own_valkey.url, on_message=lambda c, d: received.append((c, d)), on_gap=gaps.append)
    task = asyncio.create_task(bus.run())
    fleet = await make_fleet(own_valkey.url)
    channel = fleet.keys.session(SESSION).channel
    try:
        await bus.subscribe(channel)
        assert await fleet.client.publish(channel, b"before") == 1
        await until(lambda: received == [(channel, b"before")])

        own_valkey.restart()  # same port, empty: whatever was published meanwhile is gone
        await until(lambda: gaps == [frozenset({channel})], timeout_s=10)
        assert bus.connected and bus.reconnects == 1
        assert await fleet.client.publish(channel, b"after") == 1
        await until(lambda: received[-1] == (channel, b"after"))

        await bus.unsubscribe(channel)
        await fleet.client.publish(channel, b"unwanted")
        await asyncio.sleep(0.2)
        assert received[-1] == (channel, b"after")
    finally:
        task.cancel()
        await fleet.client.aclose()


async def test_an_idle_subscriber_stays_subscribed(valkey_server: LocalValkey) -> None:
    """No socket timeout on the subscriber: quiet intervals are bridged by PINGs."""
    received: list[bytes] = []
    gaps: list[frozenset[str]] = []
    bus = Bus(
        valkey_server.url,
        on_message=lambda _c, d: received.append(d),
        on_gap=gaps.append,
        health_interval_s=0.1,
    )
    task = asyncio.create_task(bus.run())
    fleet = await make_fleet(valkey_server.url)
    channel = fleet.keys.session(SESSION).channel
    try:
        await bus.subscribe(channel)
        await asyncio.sleep(1.0)  # ten quiet health intervals
        await fleet.client.publish(channel, b"still here")
        await until(lambda: received == [b"still here"])
        assert bus.reconnects == 0 and gaps == []
    finally:
        task.cancel()
        await fleet.client.aclose()


async def until(condition, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_the_bus_drops_a_silent_server_and_reports_the_gap_once_it_answers(
    own_valkey: LocalValkey,
) -> None:
    """A hung Valkey keeps the TCP connection open: only the health PING finds it."""
    received: list[bytes] = []
    gaps: list[frozenset[str]] = []
    bus = Bus(
        own_valkey.url,
        on_message=lambda _c, d: received.append(d),
        on_gap=gaps.append,
        health_interval_s=0.2,
        timeout_s=0.3,
    )
    task = asyncio.create_task(bus.run())
    fleet = await make_fleet(own_valkey.url)
    channel = fleet.keys.session(SESSION).channel
    try:
        await bus.subscribe(channel)
        own_valkey.pause()
        await until(lambda: not bus.connected, timeout_s=5)
        own_valkey.resume()
        await until(lambda: gaps == [frozenset({channel})], timeout_s=10)
        await fleet.client.publish(channel, b"back")
        await until(lambda: received == [b"back"])
    finally:
        own_valkey.resume()
        task.cancel()
        await fleet.client.aclose()


async def test_after_a_restart_without_persistence_the_same_client_sees_the_loss(
    own_valkey: LocalValkey,
) -> None:
    """The pooled connection from before the restart is broken: one retry reconnects, and the
    empty Valkey answers with a gap, then a new epoch on the next append."""
    fleet = await make_fleet(own_valkey.url)
    try:
        lease = await fleet.leases("a").acquire(SESSION, 10_000)
        assert lease is not None
        _, epoch = await fleet.log.append(SESSION, b"before", owner_token=lease.token)
        own_valkey.restart()
        lost = await fleet.log.read_after(SESSION, 1, epoch)
        assert (lost.gap, lost.events, lost.epoch) == (True, [], None)
        lease = await fleet.leases("a").acquire(SESSION, 10_000)
        assert lease is not None
        seq, new_epoch = await fleet.log.append(SESSION, b"after", owner_token=lease.token)
        assert seq == 1 and new_epoch != epoch
    finally:
        await fleet.client.aclose()


async def test_a_bus_started_while_valkey_is_down_subscribes_once_it_is_up(tmp_path) -> None:
    server = LocalValkey(tmp_path / "valkey")  # not started yet
    gaps: list[frozenset[str]] = []
    received: list[bytes] = []
    bus = Bus(
        server.url,
        on_message=lambda _c, d: received.append(d),
        on_gap=gaps.append,
        timeout_s=0.3,
    )
    task = asyncio.create_task(bus.run())
    channel = "dimtest:{ses_down}:events"
    try:
        started = time.monotonic()
        with pytest.raises(FleetUnavailable):
            await bus.subscribe(channel)
        assert time.monotonic() - started < 1.0 and not task.done()
        server.start()
        await until(lambda: gaps == [frozenset({channel})], timeout_s=10)
        fleet = await make_fleet(server.url)
        await fleet.client.publish(channel, b"up")
        await until(lambda: received == [b"up"])
        await fleet.client.aclose()
    finally:
        task.cancel()
        server.stop()


async def test_a_failing_message_handler_does_not_end_the_subscription(
    valkey_server: LocalValkey,
) -> None:
    received: list[bytes] = []

    def handler(_channel: str, data: bytes) -> None:
        received.append(data)
        if data == b"boom":
            raise RuntimeError("a caller's bug")

    bus = Bus(valkey_server.url, on_message=handler, on_gap=lambda _c: None)
    task = asyncio.create_task(bus.run())
    fleet = await make_fleet(valkey_server.url)
    channel = fleet.keys.session(SESSION).channel
    try:
        await bus.subscribe(channel)
        await fleet.client.publish(channel, b"boom")
        await fleet.client.publish(channel, b"next")
        await until(lambda: received == [b"boom", b"next"])
        assert bus.reconnects == 0 and not task.done()
    finally:
        task.cancel()
        await fleet.client.aclose()


async def test_concurrent_first_subscriptions_share_one_connection(
    valkey_server: LocalValkey,
) -> None:
    """redis-py's PubSub opens its connection lazily on its first command: two subscriptions
    racing to be first each opened one, and the one left behind stayed subscribed and unread
    (a leak, and each of its messages counted as received). Before the fix: 2 or 3 pub/sub
    connections and NUMSUB 2 for the channel subscribed on both."""
    bus = Bus(valkey_server.url, on_message=lambda _c, _d: None, on_gap=lambda _c: None)
    task = asyncio.create_task(bus.run())
    fleet = await make_fleet(valkey_server.url)
    channels = [fleet.keys.session(f"ses_race{n}").channel for n in range(3)]
    try:
        await until(lambda: bus.connected)
        await asyncio.gather(*(bus.subscribe(channel) for channel in channels))
        await asyncio.sleep(0.1)
        assert len(await fleet.client.client_list(_type="pubsub")) == 1
        assert [count for _, count in await fleet.client.pubsub_numsub(*channels)] == [1, 1, 1]
    finally:
        task.cancel()
        await fleet.client.aclose()
