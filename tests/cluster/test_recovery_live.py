"""Recovery on an instance that does not own the session, against a real valkey-server: while
the owner appends, a reader subscribes, buffers, reads the stream from its offset in pages,
merges, then follows the live messages with a `Cursor` — and ends with exactly the owner's
sequence, the same epoch, no gap, no duplicate."""

from __future__ import annotations

import asyncio

from diminuendo.fleet.bus import Bus
from diminuendo.fleet.recovery import Cursor, LiveMessage, Verdict, merge, parse_message
from tests.cluster.conftest import Fleet

SESSION = "ses_recoverrecover00"
EVENTS = 300


async def test_a_reader_joining_mid_stream_gets_every_event_once_in_order(fleet: Fleet) -> None:
    lease = await fleet.leases("owner").acquire(SESSION, 10_000)
    assert lease is not None
    published: list[tuple[int, str]] = []
    mid_turn = asyncio.Event()

    async def owner() -> None:
        for n in range(EVENTS):
            published.append(await fleet.log.append(SESSION, b"ev%d" % n, owner_token=lease.token))
            if n == 40:
                mid_turn.set()
            if n % 10 == 0:
                await asyncio.sleep(0.001)

    owning = asyncio.create_task(owner())
    await mid_turn.wait()  # the reader last saw seq 17 and comes back mid-turn

    buffered: list[LiveMessage] = []
    bus = Bus(
        fleet.url,
        on_message=lambda _c, data: buffered.append(parse_message(data)),
        on_gap=lambda _channels: None,
    )
    reading = asyncio.create_task(bus.run())
    try:
        await bus.subscribe(fleet.keys.session(SESSION).channel)  # subscribe first, then read
        epoch = published[0][1]
        delivered: list[int] = []
        after = 17
        while True:
            read = await fleet.log.read_after(SESSION, after, epoch, limit=25)
            result = merge(after, read, list(buffered))
            assert not result.gap and result.epoch == epoch
            delivered += [e.seq for e in result.events]
            after = result.last_seq
            if not result.more:
                break
        cursor = Cursor(epoch, after)
        await owning
        await asyncio.sleep(0.2)  # the last live messages arrive
        for message in buffered:
            verdict = cursor.accept(message)
            assert verdict is not Verdict.GAP
            if verdict is Verdict.DELIVER:
                delivered.append(message.seq)
        assert delivered == list(range(18, EVENTS + 1))
        assert {e for _, e in published} == {epoch}
    finally:
        reading.cancel()
