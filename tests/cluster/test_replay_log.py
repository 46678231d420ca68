"""The replay log against a real valkey-server: seqs, epochs, gaps, trimming, TTLs, fencing."""

from __future__ import annotations

import asyncio

import pytest

from diminuendo.fleet.connection import Fenced
from diminuendo.fleet.lease import Lease
from diminuendo.fleet.recovery import parse_message
from tests.cluster.conftest import Fleet, make_fleet

SESSION = "ses_0123456789abcdef"


async def owned(fleet: Fleet, session: str = SESSION, ttl_ms: int = 10_000) -> Lease:
    lease = await fleet.leases().acquire(session, ttl_ms)
    assert lease is not None
    return lease


async def test_appends_get_consecutive_seqs_and_read_after_replays_them(fleet: Fleet) -> None:
    lease = await owned(fleet)
    results = [
        await fleet.log.append(SESSION, b'{"n":%d}' % n, owner_token=lease.token)
        for n in range(1, 6)
    ]
    epoch = results[0][1]
    assert results == [(n, epoch) for n in range(1, 6)] and len(epoch) == 16
    assert await fleet.log.meta(SESSION) == (epoch, 5)

    whole = await fleet.log.read_after(SESSION, 0)
    assert (whole.gap, whole.last_seq, whole.epoch) == (False, 5, epoch)
    assert [(e.seq, e.payload) for e in whole.events] == [(n, b'{"n":%d}' % n) for n in range(1, 6)]

    tail = await fleet.log.read_after(SESSION, 3, epoch)
    assert [e.seq for e in tail.events] == [4, 5] and not tail.gap
    page = await fleet.log.read_after(SESSION, 1, epoch, limit=2)
    assert [e.seq for e in page.events] == [2, 3] and page.last_seq == 5 and not page.gap
    caught_up = await fleet.log.read_after(SESSION, 5, epoch)
    assert (caught_up.gap, caught_up.events) == (False, [])

    other_epoch = await fleet.log.read_after(SESSION, 3, "0000000000000000")
    assert (other_epoch.gap, other_epoch.events, other_epoch.epoch) == (True, [], epoch)


async def test_concurrent_appends_get_distinct_consecutive_seqs(fleet: Fleet) -> None:
    lease = await owned(fleet)
    results = await asyncio.gather(
        *(fleet.log.append(SESSION, b"x%d" % n, owner_token=lease.token) for n in range(50))
    )
    assert sorted(seq for seq, _ in results) == list(range(1, 51))
    read = await fleet.log.read_after(SESSION, 0, limit=100)
    assert [e.seq for e in read.events] == list(range(1, 51))
    # The stream order is the seq order, and each payload sits at the seq its append returned.
    by_seq = {seq: b"x%d" % n for n, (seq, _) in enumerate(results)}
    assert all(by_seq[e.seq] == e.payload for e in read.events)


async def test_the_epoch_survives_a_new_client_and_changes_only_when_the_log_is_lost(
    fleet: Fleet,
) -> None:
    lease = await owned(fleet)
    _, epoch = await fleet.log.append(SESSION, b"a", owner_token=lease.token)

    restarted = await make_fleet(fleet.url)  # another process, or this one after a restart
    try:
        assert await restarted.log.append(SESSION, b"b", owner_token=lease.token) == (2, epoch)
        await restarted.client.flushall()  # Valkey lost everything (restart without persistence)
        assert await restarted.log.meta(SESSION) is None
        lost = await restarted.log.read_after(SESSION, 2, epoch)
        assert (lost.gap, lost.events, lost.epoch) == (True, [], None)

        with pytest.raises(Fenced):  # the lease went with the data: the owner must re-acquire
            await restarted.log.append(SESSION, b"c", owner_token=lease.token)
        lease = await owned(restarted)
        seq, new_epoch = await restarted.log.append(SESSION, b"c", owner_token=lease.token)
        assert seq == 1 and new_epoch != epoch
        stale = await restarted.log.read_after(SESSION, 2, epoch)
        assert (stale.gap, stale.events, stale.epoch) == (True, [], new_epoch)
    finally:
        await restarted.client.aclose()


async def test_a_trimmed_start_is_a_gap_and_the_retained_tail_is_returned(fleet: Fleet) -> None:
    log = fleet.replay_log(max_events=10)
    lease = await owned(fleet)
    for n in range(300):
        await log.append(SESSION, b"e%d" % n, owner_token=lease.token)
    retained = await fleet.client.xlen(fleet.keys.session(SESSION).log)
    assert retained < 300  # MAXLEN ~ trims whole nodes (100 entries), never below 10
    read = await log.read_after(SESSION, 0, limit=1000)
    assert read.gap and read.last_seq == 300
    assert [e.seq for e in read.events] == list(range(301 - retained, 301))
    recent = await log.read_after(SESSION, 295, read.epoch)
    assert not recent.gap and [e.seq for e in recent.events] == [296, 297, 298, 299, 300]


async def test_the_byte_bound_trims_large_events_sooner(fleet: Fleet) -> None:
    log = fleet.replay_log(max_events=10_000, max_bytes=20 * 1024)
    lease = await owned(fleet)
    for _ in range(400):
        await log.append(SESSION, b"x" * 1024, owner_token=lease.token)
    # 20 events' worth of bytes, plus at most a node of approximate trimming.
    assert await fleet.client.xlen(fleet.keys.session(SESSION).log) <= 200


async def test_the_log_expires_after_its_ttl_and_the_meta_outlives_it(fleet: Fleet) -> None:
    log = fleet.replay_log(ttl_ms=60_000)
    lease = await owned(fleet)
    await log.append(SESSION, b"a", owner_token=lease.token)
    keys = fleet.keys.session(SESSION)
    log_ttl, meta_ttl = await fleet.client.pttl(keys.log), await fleet.client.pttl(keys.meta)
    assert 55_000 < log_ttl <= 60_000 and 6 * 60_000 < meta_ttl <= 7 * 60_000

    await fleet.client.delete(keys.log)  # the log expired, the meta did not
    read = await log.read_after(SESSION, 0)
    assert read.gap and read.events == [] and read.last_seq == 1


async def test_live_messages_carry_seq_epoch_and_the_exact_payload(fleet: Fleet) -> None:
    lease = await owned(fleet)
    pubsub = fleet.client.pubsub()
    await pubsub.subscribe(fleet.keys.session(SESSION).channel)
    payload = b'{"type":"text","text":"a:b:c"}'
    seq, epoch = await fleet.log.append(SESSION, payload, owner_token=lease.token)
    message = None
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message:
            break
    await pubsub.aclose()
    assert message is not None and message["data"] == b"1:" + epoch.encode() + b":" + payload
    parsed = parse_message(message["data"])
    assert parsed is not None and (parsed.seq, parsed.epoch, parsed.payload) == (
        seq,
        epoch,
        payload,
    )


async def test_session_ids_cannot_escape_their_hash_tag(fleet: Fleet) -> None:
    for bad in ("ses_a}b", "ses_{x}", "a:b", "", "x" * 200):
        with pytest.raises(ValueError):
            fleet.keys.session(bad)
    keys = fleet.keys.session(SESSION)
    assert {k.split("{")[1].split("}")[0] for k in (keys.log, keys.meta, keys.lease)} == {SESSION}


async def test_append_batches_mirror_the_owners_stream_or_refuse(fleet: Fleet) -> None:
    """The owner's pipeline: its epoch and seqs, in one round trip; a retry of entries already
    appended adds nothing; a hole, another epoch or a lost log is `Diverged`."""
    from diminuendo.fleet.replay_log import Batch, Diverged

    lease = await owned(fleet)
    epoch = "00000000000000e1"

    async def refusal(entries: list, token: str = lease.token, at: str = epoch) -> type | None:
        (answer,) = await fleet.log.append_batches([Batch(SESSION, entries, token, at)])
        return None if answer is None else type(answer)

    entries = [(n, b"f%d" % n) for n in range(1, 4)]
    assert await refusal(entries) is None
    assert await refusal(entries[1:]) is None
    assert await fleet.log.meta(SESSION) == (epoch, 3)
    read = await fleet.log.read_after(SESSION, 0)
    assert [(e.seq, e.payload) for e in read.events] == entries  # the retry added nothing

    for bad, wrong_epoch in (([(5, b"hole")], epoch), ([(4, b"x")], "00000000000000e2")):
        assert await refusal(bad, at=wrong_epoch) is Diverged
    assert await refusal([(4, b"x")], token="1:other") is Fenced
    await fleet.client.delete(fleet.keys.session(SESSION).meta)  # Valkey lost the session
    assert await refusal([(4, b"x")]) is Diverged
    assert await fleet.log.meta(SESSION) is None  # nothing written under a made-up epoch
