"""What the owner's appends cost Valkey and the gateway (issue 16's CPU target), against a real
valkey-server: scripts run by `EVALSHA` alone (no `SCRIPT EXISTS` per pipeline), survive a
`SCRIPT FLUSH`, and one pipeline carries every session's pending frames, each session's in order
and its refusal its own."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from diminuendo.fleet.appending import MAX_IN_FLIGHT, LogAppender, LogWriter
from diminuendo.fleet.availability import FleetAvailability
from diminuendo.fleet.connection import Fenced, FleetError
from diminuendo.fleet.lease import Lease
from diminuendo.fleet.replay_log import Batch, Diverged, ReplayLog
from tests.cluster.conftest import Fleet

EPOCH = "00000000000000e1"


async def script_calls(fleet: Fleet) -> dict[str, int]:
    """Commands Valkey ran since the last `CONFIG RESETSTAT`, by name (`script|exists`, …)."""
    stats = await fleet.client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def owned(fleet: Fleet, session: str) -> Lease:
    lease = await fleet.leases().acquire(session, 10_000)
    assert lease is not None
    return lease


async def logged(fleet: Fleet, session: str) -> list[tuple[int, bytes]]:
    read = await fleet.log.read_after(session, 0, EPOCH, limit=10_000)
    return [(e.seq, e.payload) for e in read.events]


async def test_a_script_flush_between_two_appends_loses_nothing_and_no_script_exists_is_sent(
    fleet: Fleet,
) -> None:
    """`SCRIPT FLUSH` (as after a Valkey restart) between two batches: the second lands after the
    first, in order, and nothing is appended twice. Before the fix (redis-py's registered
    script) the appends worked but each pipeline cost a `SCRIPT EXISTS` round trip first:
    `script|exists` was 3 here, now it is absent."""
    session = "ses_noscript000000001"
    lease = await owned(fleet, session)
    await fleet.client.script_flush()
    await fleet.client.config_resetstat()
    first = [(n, b"a%d" % n) for n in range(1, 4)]
    second = [(n, b"b%d" % n) for n in range(4, 7)]
    for batch in (first, second):
        assert await fleet.log.append_batches([Batch(session, batch, lease.token, EPOCH)]) == [None]
        await fleet.client.script_flush()
    renewed = await fleet.leases().renew_all([lease])  # a lease renewal after a flush, too
    assert await logged(fleet, session) == first + second
    assert renewed == [True]
    calls = await script_calls(fleet)
    assert "script|exists" not in calls
    assert calls["script|load"] == 3  # on first use and after each flush, not per call


async def test_a_script_flush_before_a_single_append_or_lease_call_is_recovered(
    fleet: Fleet,
) -> None:
    session = "ses_noscript000000002"
    await fleet.client.script_flush()
    lease = await owned(fleet, session)
    await fleet.client.script_flush()
    seq, _ = await fleet.log.append(session, b"x", owner_token=lease.token)
    await fleet.client.script_flush()
    assert seq == 1
    assert await fleet.leases().release(lease)


async def test_one_round_trip_appends_many_sessions_and_a_refusal_is_its_sessions_own(
    fleet: Fleet,
) -> None:
    """Three sessions in one pipeline: the fenced one is refused, the diverged one too, the
    third's frames land all the same, in order."""
    ok, fenced, diverged = "ses_batch00000000000a", "ses_batch00000000000b", "ses_batch00000000000c"
    leases = {s: await owned(fleet, s) for s in (ok, fenced, diverged)}
    frames = [(n, b"f%d" % n) for n in range(1, 4)]
    refusals = await fleet.log.append_batches(
        [
            Batch(fenced, frames, "1:someone-else", EPOCH),
            Batch(ok, frames[:2], leases[ok].token, EPOCH),
            Batch(diverged, frames[1:], leases[diverged].token, EPOCH),  # starts at seq 2
            Batch(ok, frames[2:], leases[ok].token, EPOCH),
        ]
    )
    assert [type(r) for r in refusals] == [Fenced, type(None), Diverged, type(None)]
    assert await logged(fleet, ok) == frames
    assert await fleet.log.meta(fenced) is None
    assert await fleet.log.meta(diverged) is None


class CountingLog(ReplayLog):
    """The real log, counting its round trips of appends."""

    round_trips = 0

    async def append_batches(self, batches: list[Batch]) -> list[Exception | None]:  # type: ignore[override]
        self.round_trips += 1
        return await super().append_batches(batches)


async def test_the_writer_sends_all_sessions_frames_in_few_round_trips_in_order(
    fleet: Fleet,
) -> None:
    """200 sessions publishing 5 frames each in the same loop passes: one pipeline per pass
    for all of them (before: one task and one round trip per session, 200 per pass), every
    log in seq order; a session whose lease was taken is refused alone, told once."""
    log = CountingLog(fleet.client, fleet.url, fleet.keys)
    availability = FleetAvailability(fleet.client, fleet.url)
    writer = LogWriter(SimpleNamespace(log=log, availability=availability))  # type: ignore[arg-type]
    sessions = [f"ses_writer{n:011d}" for n in range(200)]
    refused: dict[str, list[FleetError]] = {s: [] for s in sessions}
    appenders: list[LogAppender] = []
    for s in sessions:
        lease = await owned(fleet, s)
        appenders.append(LogAppender(writer, lease, EPOCH, refused[s].append))
    taken = sessions[7]
    await fleet.client.delete(fleet.keys.session(taken).lease)
    await owned(fleet, taken)  # another instance's lease now
    for seq in range(1, 6):
        for appender in appenders:
            appender.push(seq, b"%d" % seq)
        await asyncio.sleep(0)
    for appender in appenders:
        assert await appender.flush(5.0)
    assert log.round_trips <= 10  # 1,000 frames, ≤ 1,024 per pipeline; a few passes
    for s in sessions:
        if s == taken:
            assert [type(e) for e in refused[s]] == [Fenced]
            assert await fleet.log.meta(s) is None
        else:
            assert refused[s] == []
            assert await logged(fleet, s) == [(n, b"%d" % n) for n in range(1, 6)]


async def test_a_burst_larger_than_one_pipeline_lands_in_order(fleet: Fleet) -> None:
    """One session's burst spans several pipelines (≤ 1,024 frames each), still in order."""
    frames = 3000
    log = CountingLog(fleet.client, fleet.url, fleet.keys)
    writer = LogWriter(SimpleNamespace(log=log, availability=None))  # type: ignore[arg-type]
    session = "ses_burst00000000000"
    appender = LogAppender(writer, await owned(fleet, session), EPOCH, lambda exc: None)
    for seq in range(1, frames + 1):
        appender.push(seq, b"%d" % seq)
    assert await appender.flush(10.0)
    assert log.round_trips == 3
    assert await logged(fleet, session) == [(n, b"%d" % n) for n in range(1, frames + 1)]


class OverlapLog(ReplayLog):
    """The real log, slowed down a little, recording the pipelines in flight at once and any
    session found in two of them."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.in_flight: set[str] = set()
        self.most_at_once = 0
        self.pipelines = 0
        self.twice: list[str] = []

    async def append_batches(self, batches: list[Batch]) -> list[Exception | None]:  # type: ignore[override]
        sessions = {batch.session_id for batch in batches}
        self.twice += sorted(sessions & self.in_flight)
        self.in_flight |= sessions
        self.pipelines += 1
        self.most_at_once = max(self.most_at_once, self.pipelines)
        try:
            await asyncio.sleep(0.03)  # longer than a cycle of the groups: pushes come in flight
            return await super().append_batches(batches)
        finally:
            self.pipelines -= 1
            self.in_flight -= sessions


async def test_pipelines_overlap_but_a_session_is_in_one_at_a_time(fleet: Fleet) -> None:
    """Sessions publishing while earlier pipelines are in flight: several pipelines overlap
    (Valkey runs one while the next is packed; one at a time, the writer fell seconds behind at
    11,000 frames/s), at most `MAX_IN_FLIGHT`, never one session in two, every log in order."""
    log = OverlapLog(fleet.client, fleet.url, fleet.keys)
    writer = LogWriter(SimpleNamespace(log=log, availability=None))  # type: ignore[arg-type]
    sessions = [f"ses_overlap{n:010d}" for n in range(50)]
    appenders = [
        LogAppender(writer, await owned(fleet, s), EPOCH, lambda exc: None) for s in sessions
    ]
    for seq in range(1, 21):
        for group in range(5):  # the sessions of a group publish together, the groups apart
            for appender in appenders[group::5]:
                appender.push(seq, b"%d" % seq)
            await asyncio.sleep(0.003)
    for appender in appenders:
        assert await appender.flush(10.0)
    assert log.twice == []
    assert 1 < log.most_at_once <= MAX_IN_FLIGHT
    for s in sessions:
        assert await logged(fleet, s) == [(n, b"%d" % n) for n in range(1, 21)]
