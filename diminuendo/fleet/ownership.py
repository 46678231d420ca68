"""The sessions this instance owns in fleet mode: each one's lease, its stream continued from
the session's log in Valkey, and the appends that keep the log a copy of that stream.

The hot path stays what it is without Valkey: the owner assigns seqs and delivers to its local
subscribers synchronously (`SessionStream.publish`); `LoggedStream` only hands each frame to the
session's `LogAppender`, and the instance's one `LogWriter` sends the pending frames of every
session to Valkey in one pipeline per round trip, each session's in order — the append script
checks the lease's fencing token and that each seq continues the log
(`ReplayLog.append_batches`), so the log is the owner's stream or nothing.

Contract of `Ownership` (used by `sessions.activation.Activator`):

- `own(session_id, …)` → a `LoggedStream` when this instance now owns the session: the lease is
  held (and renewed), the stream's epoch and last seq are the log's (a new epoch when Valkey has
  no log for the session), its window the log's retained frames. A `FollowedStream` when
  another instance owns it (`following`: a copy of its stream; commands go to the owner).
  `None` when Valkey is not in use or fails before the lease (reported to `availability`): the
  caller runs the session in memory, in a fresh epoch. Valkey failing while following is
  `GatewayError` `UPSTREAM_UNAVAILABLE` (a runtime socket per session: never two). Concurrent
  calls for one session share one claim; a session owned or followed here already is handed
  its stream, unless that stream was closed (its session left memory, its `release` to come):
  then the log goes on in a new stream.
- `release(stream)`: the session leaves this instance: its pending frames are appended (bounded
  by `FLUSH_TIMEOUT_S`), then the lease is given back, so the next owner continues at once.
- `on_lost(session_id, stream)`: called once when this instance stops owning a session it did
  not release — its lease was lost (expired, taken), or the log refused an append (`Fenced`,
  `Diverged`): nothing more of it reaches the log, and the caller must stop the session here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from loguru import logger

from diminuendo.fleet.appending import LogAppender, LoggedStream, LogWriter
from diminuendo.fleet.connection import FleetError, FleetUnavailable
from diminuendo.fleet.following import FollowedStream, Following
from diminuendo.fleet.lease import Lease
from diminuendo.fleet.replay_log import Diverged, Replay, new_epoch
from diminuendo.fleet.streams import FleetStream, read_window
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.budget import ReplayBudget
from diminuendo.sessions.stream import SessionStream

if TYPE_CHECKING:  # the Fleet builds the Ownership
    from diminuendo.fleet.runtime import Fleet

__all__ = ["Ownership"]

FLUSH_TIMEOUT_S = 2.0


class Ownership:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._owned: dict[str, tuple[Lease, LoggedStream]] = {}
        self._claims: dict[str, asyncio.Future[FleetStream | None]] = {}
        self.on_lost: Callable[[str, SessionStream], None] = lambda session_id, stream: None
        self.on_orphaned: Callable[[SessionStream], None] = lambda stream: None
        self._writer = LogWriter(fleet)
        self._tasks: set[asyncio.Task[None]] = set()
        self._following = Following(
            fleet,
            on_lost=lambda session_id, stream: self.on_lost(session_id, stream),
            on_orphaned=lambda stream: self.on_orphaned(stream),
        )

    def __repr__(self) -> str:
        return f"Ownership(owned={len(self._owned)}, following={self._following!r})"

    async def start(self) -> None:
        await self._following.start()

    async def close(self) -> None:
        await self._following.close()

    async def read_log(
        self, session_id: str, after_seq: int, epoch: str | None, limit: int
    ) -> Replay | None:
        """A page of the session's log in Valkey, for a `get_events` on an instance that holds
        no stream of it; None when Valkey holds no log of it or cannot be used (the caller
        answers from the record, as without Valkey)."""
        fleet = self._fleet
        if not fleet.availability.use_valkey:
            return None
        try:
            replay = await fleet.log.read_after(session_id, after_seq, epoch, limit)
        except FleetUnavailable as exc:
            fleet.availability.failed(exc)
            return None
        return replay if replay.epoch is not None else None

    def holds(self, session_id: str, token: str) -> bool:
        """Whether this instance owns the session with lease `token` (a forwarded command's)."""
        owned = self._owned.get(session_id)
        return owned is not None and owned[0].token == token

    def follows(self, stream: SessionStream) -> bool:
        """Whether `stream` is a copy of a session another instance owns."""
        return self._following.follows(stream)

    def observe(
        self, stream: SessionStream, on_control: Callable[[str, dict[str, Any]], None]
    ) -> None:
        """A followed session's state frames go to `on_control`, from its window on."""
        if isinstance(stream, FollowedStream):
            stream.on_control = on_control
            stream.mirror_window()

    async def caught_up(self, stream: SessionStream, after_seq: int | None) -> None:
        """A followed session's copy holds what its log holds now, and `after_seq` (before a
        join: `Following.caught_up`)."""
        if self._following.follows(stream):
            try:
                await self._following.caught_up(stream, after_seq)
            except FleetUnavailable as exc:
                raise _unreachable(stream.session_id) from exc

    async def own(
        self, session_id: str, *, max_events: int, max_bytes: int, budget: ReplayBudget | None
    ) -> FleetStream | None:
        claim = self._claims.get(session_id)
        if claim is None:
            limits = {"max_events": max_events, "max_bytes": max_bytes, "budget": budget}
            claim = asyncio.ensure_future(self._claim(session_id, limits))
            self._claims[session_id] = claim
            claim.add_done_callback(lambda _: self._claims.pop(session_id, None))
        return await asyncio.shield(claim)

    async def _claim(self, session_id: str, limits: dict[str, Any]) -> FleetStream | None:
        owned = self._owned.get(session_id)
        if owned is not None:
            lease, leaving = owned
            if not leaving.closed:
                return leaving
            # Its session left memory and its `release` is to come: handed to this claim, it
            # would stop the new session's appends and give its lease away. The log goes on in
            # a new stream under the same lease; the release then finds nothing of its own.
            del self._owned[session_id]
            await self._retire(leaving)
            return await self._take(lease, limits)
        fleet = self._fleet
        if not fleet.availability.use_valkey:
            return None
        try:
            lease = await fleet.leases.acquire(session_id, fleet.lease_ttl_ms)
        except FleetUnavailable as exc:
            fleet.availability.failed(exc)
            return None
        if lease is None:  # another instance owns it: follow its stream
            try:
                return await self._following.follow(session_id, limits)
            except FleetUnavailable as exc:
                fleet.availability.failed(exc)
                raise _unreachable(session_id) from exc
        return await self._take(lease, limits)

    async def take_over(self, followed: SessionStream, **limits: Any) -> LoggedStream | None:
        """A followed session lost its owner (`on_orphaned`): this instance takes its lease and
        continues its log, which the dead owner can no longer extend (fencing). None when
        another instance was faster (keep following it) or Valkey failed. `limits` as `own`'s."""
        fleet = self._fleet
        if followed.session_id in self._owned or not self._following.follows(followed):
            return None  # taken over already (a second report of the same orphan)
        if not fleet.availability.use_valkey:
            return None
        try:
            lease = await fleet.leases.acquire(followed.session_id, fleet.lease_ttl_ms)
        except FleetUnavailable as exc:
            fleet.availability.failed(exc)
            return None
        if lease is None:
            return None
        stream = await self._take(lease, limits)
        if stream is not None:
            await self._following.unfollow(followed)
            logger.info("session {}: taken over ({})", lease.session_id, lease.token)
        return stream

    async def _take(self, lease: Lease, limits: dict[str, Any]) -> LoggedStream | None:
        """Own the session with `lease`: its stream continued from the log."""
        fleet = self._fleet
        try:
            stream = await self._continue_log(lease, limits)
        except FleetUnavailable as exc:
            fleet.availability.failed(exc)
            with suppress(FleetUnavailable):
                await fleet.leases.release(lease)
            return None
        fleet.renewer.hold(lease)
        self._owned[lease.session_id] = (lease, stream)
        return stream

    async def _continue_log(self, lease: Lease, limits: dict[str, Any]) -> LoggedStream:
        """The owner's stream: the log's epoch, last seq and retained frames."""
        session_id = lease.session_id
        window = await read_window(self._fleet.log, session_id, limits["max_events"])
        epoch, last_seq, frames = window or (new_epoch(), 0, [])
        appender = LogAppender(
            self._writer, lease, epoch, lambda exc: self._refused(session_id, exc)
        )
        stream = LoggedStream(session_id, epoch, appender, **limits)
        stream.seed(last_seq, frames)
        return stream

    async def release(self, stream: SessionStream) -> None:
        """Append what is pending, then give the lease back (the session left this instance);
        a followed session is no longer followed."""
        await self._following.unfollow(stream)
        owned = self._owned.get(stream.session_id)
        if owned is None or owned[1] is not stream:
            return
        lease, logged = self._owned.pop(stream.session_id)
        await self._retire(logged)
        self._fleet.renewer.drop(lease.session_id)
        with suppress(FleetUnavailable):
            await self._fleet.leases.release(lease)

    async def _retire(self, logged: LoggedStream) -> None:
        """Append what `logged` has pending (bounded by `FLUSH_TIMEOUT_S`), then no more."""
        if not await logged.appender.flush(FLUSH_TIMEOUT_S):
            logger.warning("session {}: log appends pending at release", logged.session_id)
        logged.appender.stop()

    async def release_all(self) -> None:
        for _, stream in list(self._owned.values()):
            await self.release(stream)

    def lease_lost(self, lease: Lease) -> None:
        """The renewer's report (`Fleet`): a lease of ours is gone."""
        owned = self._owned.get(lease.session_id)
        if owned is not None and owned[0] == lease:
            self._lose(lease.session_id)

    def _refused(self, session_id: str, exc: FleetError) -> None:
        logger.warning("session {}: {}; it stops on this instance", session_id, exc)
        owned = self._owned.get(session_id)
        if owned is None:
            return
        lease = self._fleet.renewer.drop(session_id)
        if isinstance(exc, Diverged) and lease is not None:
            # Still ours, but the log no longer continues our stream: give the session back, so
            # its next activation (here or elsewhere) starts over from what Valkey holds.
            task = asyncio.get_running_loop().create_task(self._give_back(lease))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._lose(session_id)

    async def _give_back(self, lease: Lease) -> None:
        with suppress(FleetUnavailable):
            await self._fleet.leases.release(lease)

    def _lose(self, session_id: str) -> None:
        _, stream = self._owned.pop(session_id)
        stream.appender.stop()
        self.on_lost(session_id, stream)


def _unreachable(session_id: str) -> GatewayError:
    """Valkey failed while following a session another instance owns: running it here too
    would be a second runtime socket, so the client retries instead."""
    return GatewayError(
        ErrorCode.UPSTREAM_UNAVAILABLE,
        "The session's instance cannot be reached, try again shortly",
        session_id=session_id,
        retry_after_ms=1000,
    )
