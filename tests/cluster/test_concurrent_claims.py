"""Concurrent claims of one session on one instance (issue 16, the follow race, and its owner
side).

Followers: concurrent joins of a session another instance owns share one copy of its stream.
In the fleet fan-out benchmark (50 joins in flight on instance B of a session owned by A), in 2
of 10 runs every client on B got 0 live deltas — no error, just silence. The cause:
`Ownership.own` deduplicates claims only while one is in flight. A join whose claim started in
the event-loop step the first claim ended, before `SessionAccess.held` stored the first claim's
stream, claimed again; `Following.follow` replaced the session's follower with a second copy.
The session kept the first copy, which the bus no longer fed: its clients heard nothing more,
and its `caught_up` read nothing either (it no longer knew the copy).

Owners: a join claiming a session this instance owns while the session leaves memory (closed by
`Activator._release`, its `Ownership.release` still to come) was handed the leaving stream; the
release then stopped its appends and gave the lease away under the new session.

Real parts: a real `valkey-server`, two `fleet.runtime.Fleet`s as two instances would build
them (own instance ids, leases, logs, pub/sub buses); the interleavings are made deterministic
by running the second claim right after the first returned (or the stream was closed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress

import msgspec
import pytest

from diminuendo.fleet.runtime import Fleet
from diminuendo.fleet.streams import FleetStream
from diminuendo.local.valkey import LocalValkey
from diminuendo.sessions.stream import Frame
from diminuendo.settings import Settings

LIMITS = {"max_events": 1000, "max_bytes": 1 << 20, "budget": None}
DELTAS = 50


class Collector:
    """A subscriber that keeps every frame it is given."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._wanted = 0
        self._enough = asyncio.Event()

    def deliver(self, frame: Frame) -> None:
        self.frames.append(frame)
        if len(self.frames) >= self._wanted:
            self._enough.set()

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> None:
        """Until `count` frames arrived, or `timeout_s` (the caller's assertion says what)."""
        self._wanted = count
        if len(self.frames) < count:
            self._enough.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._enough.wait(), timeout_s)


@pytest.fixture
async def instances(valkey_server: LocalValkey) -> AsyncIterator[tuple[Fleet, Fleet]]:
    settings = dataclasses.replace(
        Settings(), redis_url=valkey_server.url, redis_key_prefix=f"follow{uuid.uuid4().hex[:8]}"
    )
    a, b = Fleet(settings, "instance-a"), Fleet(settings, "instance-b")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()


async def owned_session(fleet: Fleet) -> tuple[str, FleetStream]:
    """A new session owned by `fleet`'s instance, its first frame in the log."""
    session_id = uuid.uuid4().hex
    owned = await fleet.ownership.own(session_id, **LIMITS)
    assert owned is not None and not fleet.ownership.follows(owned)
    owned.publish({"type": "session_state", "state": "ready"}, 0)
    return session_id, owned


async def live_seqs(owned: FleetStream, copy: FleetStream) -> list[int]:
    """The seqs `copy` delivers live while the owner publishes `DELTAS` deltas."""
    joined = Collector()
    copy.attach(joined, None)
    for n in range(DELTAS):
        owned.publish({"type": "text_delta", "text": f"d{n}"}, 0)
    await joined.wait_for(DELTAS)
    return [f.seq for f in joined.frames]


async def test_a_claim_after_the_first_finished_shares_its_copy_and_every_delta_arrives(
    instances: tuple[Fleet, Fleet],
) -> None:
    """Before the fix: `second is first` failed (two `FollowedStream`s); without that assertion
    the subscriber of the first copy — the one the session keeps — got none of the deltas
    published on A after the second claim, nor the `turn_complete` (seqs `[1]`, its replay,
    instead of `[1, …, 52]`)."""
    a, b = instances
    session_id, owned = await owned_session(a)

    first = await b.ownership.own(session_id, **LIMITS)
    # A join that read the session's record while the first claim ran: its claim starts now,
    # before the first claim's stream is held (`SessionAccess.held`).
    second = await b.ownership.own(session_id, **LIMITS)
    assert first is not None and b.ownership.follows(first)
    assert second is first  # one copy per session per instance

    joined = Collector()
    await b.ownership.caught_up(first, 0)
    replay = first.attach(joined, 0, first.epoch)
    joined.frames += replay.frames
    for n in range(DELTAS):
        owned.publish({"type": "text_delta", "text": f"d{n}"}, 0)
    owned.publish({"type": "turn_complete", "finalText": "done"}, 0)
    await joined.wait_for(DELTAS + 2)
    assert [f.seq for f in joined.frames] == list(range(1, DELTAS + 3))
    texts = [msgspec.json.decode(f.data).get("text") for f in joined.frames[1:-1]]
    assert texts == [f"d{n}" for n in range(DELTAS)]
    assert joined.frames[-1].type == "turn_complete"


async def test_many_claims_at_once_share_one_copy(instances: tuple[Fleet, Fleet]) -> None:
    """100 claims of a followed session in flight at once, in waves (each wave starts as the
    previous one returns, as joins do whose record reads return at different times): every
    one gets the same copy, and it receives what the owner publishes.

    Before the fix: 4 copies, one per wave (`assert 4 == 1`)."""
    a, b = instances
    session_id, owned = await owned_session(a)
    streams = []
    for _ in range(4):
        streams += await asyncio.gather(*(b.ownership.own(session_id, **LIMITS) for _ in range(25)))
    assert len({id(s) for s in streams}) == 1
    assert await live_seqs(owned, streams[0]) == list(range(2, DELTAS + 2))


async def test_a_join_during_the_release_of_a_copy_gets_a_new_one_that_stays_fed(
    instances: tuple[Fleet, Fleet],
) -> None:
    """A followed session leaves memory (`Activator._release` closes its copy, then `release`
    unfollows it) while a join claims it: sharing the closing copy would leave the join's
    session on a copy the release then stops feeding. The join gets a new copy, and the old
    one's release leaves the new one fed. (A guard of the fix: sharing without the closed check
    failed with `new is old`.)"""
    a, b = instances
    session_id, owned = await owned_session(a)
    old = await b.ownership.own(session_id, **LIMITS)
    assert old is not None
    old.close()
    new = await b.ownership.own(session_id, **LIMITS)
    assert new is not None and new is not old
    await b.ownership.release(old)
    assert await live_seqs(owned, new) == list(range(2, DELTAS + 2))


async def test_a_claim_while_an_owned_session_leaves_memory_keeps_the_lease_and_the_log(
    instances: tuple[Fleet, Fleet],
) -> None:
    """A owns the session; it leaves memory on A (closed, then released after the runtime
    socket closed) while a join on A claims it: the join's stream must be logged and A must
    still hold the lease once the release is done.

    Before the fix: the claim returned the leaving stream itself (`again is not leaving`
    failed); without that assertion, the release stopped its appends and released the lease —
    A's new session published frames no other instance could ever read, and any instance could
    take the session (the lease holder was None)."""
    a, _ = instances
    session_id, leaving = await owned_session(a)
    leaving.close()  # `Activator._release`: the session leaves memory; `release` comes later
    again = await a.ownership.own(session_id, **LIMITS)
    assert again is not None and again is not leaving
    await a.ownership.release(leaving)
    holder = await a.leases.holder(session_id)
    assert holder is not None and a.ownership.holds(session_id, holder)
    for n in range(DELTAS):
        again.publish({"type": "text_delta", "text": f"d{n}"}, 0)
    assert await again.appender.flush(5.0)  # type: ignore[attr-defined]
    meta = await a.log.meta(session_id)
    assert meta == (again.epoch, again.last_seq) == (leaving.epoch, DELTAS + 1)


async def test_a_follow_started_as_its_copy_is_lost_stays_fed(
    instances: tuple[Fleet, Fleet],
) -> None:
    """A copy is lost (`Following._lose`: the log moved on under it) and the same session is
    followed again before the loss's unsubscribe ran (it runs in a task of its own): that
    unsubscribe must not take the new copy's subscription away. Made deterministic by following
    again in the loop step of the loss (no caller does that today; a rejoin comes later).

    Before the fix: the new copy got none of the owner's live deltas (`[] == [2, …, 51]`)."""
    a, b = instances
    session_id, owned = await owned_session(a)
    assert await b.ownership.own(session_id, **LIMITS) is not None
    following = b.ownership._following
    channel = b.keys.session(session_id).channel
    following._lose(following._followers[channel], "the test moves the log on")
    new = await following.follow(session_id, LIMITS)
    assert await live_seqs(owned, new) == list(range(2, DELTAS + 2))
