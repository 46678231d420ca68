"""Sessions another instance owns, followed here: a copy of the owner's stream kept from the
session's log and its channel, so a client can join on any instance (docs/FLEET.md, "Recovery
on an instance that does not own the session").

Centrifugo's recovery: subscribe to the session's channel and buffer, read the log after the
copy's last seq, apply what was buffered by seq (`recovery.Cursor`: deliver, drop a duplicate, or
read again after a hole), then deliver live messages as they come. Every reconnect of the
subscriber (`Bus.on_gap`) and every hole reads the log again, so a lost pub/sub message is never
a lost frame. A log that changed epoch or lost the copy's position cannot be continued: the
session is lost here (`on_lost`), its clients rejoin and get `gap: true`.

Contract of `Following`:

- `follow(session_id, …)` → a `FollowedStream` caught up with the log (raises `FleetUnavailable`
  when Valkey fails, `GatewayError` `UPSTREAM_UNAVAILABLE` when the owner has not written the
  log yet within `FIRST_APPEND_WAIT_S`). A session followed already returns its copy: one copy
  per session per instance, the one the bus feeds (a second copy would leave the first, which
  the session keeps, silent: issue 16). The caller runs one `follow` of a session at a time
  (`Ownership`'s claims); a copy closed by its session (leaving memory, its `unfollow` to come)
  is replaced, not shared.
- `caught_up(stream, after_seq)`: reads what the log holds beyond the copy, and waits (at most
  `AHEAD_WAIT_S`) for the frames up to `after_seq` a client saw from the owner: a client must
  not be "ahead" (a gap) of a copy that only lags.
- `unfollow(stream)`: stops following (the session left this instance).
- `on_orphaned(stream)`: a followed session has no owner any more (checked every third of the
  lease TTL): the caller may take it over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from diminuendo.fleet.connection import FleetUnavailable
from diminuendo.fleet.recovery import Cursor, LiveMessage, Verdict, parse_message
from diminuendo.fleet.streams import READ_PAGE, FleetStream, as_frame, read_window
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.events import SessionEvent
from diminuendo.sessions.stream import Frame, SessionStream

if TYPE_CHECKING:
    from diminuendo.fleet.runtime import Fleet

__all__ = ["FollowedStream", "Following"]

FIRST_APPEND_WAIT_S = 2.0
# How long a join waits for the frames a client saw from the owner before calling it ahead (a
# gap). Paid in full only when the owner died within an append of the client's last frame (rare;
# the join is then 2 s slower); too short, and a live owner merely slowed down (a loaded host, a
# far Valkey, a pause) gives its clients a false `gap: true` and a rebuild from history — 250 ms
# did with the owner's appends 0.4 s late (tests/cluster/test_lagging_owner.py).
AHEAD_WAIT_S = 2.0
AHEAD_POLL_S = (0.02, 0.2)  # the log is read again after 20 ms, doubling up to 200 ms
# The frames that change a session's state: a follower's copy mirrors them (`on_control`).
CONTROL_FRAMES = frozenset(
    {
        "session_state",
        "turn_started",
        "turn_complete",
        "turn_error",
        "question_requested",
        "permission_requested",
        "approval_resolved",
    }
)
_decode = msgspec.json.Decoder().decode


class FollowedStream(FleetStream):
    """A copy of the owner's stream: frames come only through `relay`, in seq order."""

    __slots__ = ("on_control",)

    def __init__(self, session_id: str, epoch: str, **limits: Any) -> None:
        super().__init__(session_id, epoch, **limits)
        self.on_control: Callable[[str, dict[str, Any]], None] = lambda kind, event: None

    def publish(self, event: dict[str, Any] | SessionEvent, ts_ms: int) -> Frame:
        """Never called on a copy: its seqs are the owner's (the activator never publishes on
        a followed session). A bug, refused rather than forking the stream."""
        raise RuntimeError(f"publish on a followed session {self.session_id}")

    def relay(self, frame: Frame) -> None:
        super().relay(frame)
        if frame.type in CONTROL_FRAMES:
            self.on_control(frame.type, _decode(frame.data))

    def mirror_window(self) -> None:
        """Replay the control frames of the window to `on_control` (a new copy's state)."""
        for frame in self._window:
            if frame.type in CONTROL_FRAMES:
                self.on_control(frame.type, _decode(frame.data))


class _Follower:
    __slots__ = ("buffer", "cursor", "stream", "task")

    def __init__(self) -> None:
        self.buffer: list[LiveMessage] | None = []  # live messages held while reading the log
        self.stream: FollowedStream | None = None
        self.cursor: Cursor | None = None
        self.task: asyncio.Task[None] | None = None


class Following:
    def __init__(
        self,
        fleet: Fleet,
        on_lost: Callable[[str, SessionStream], None],
        on_orphaned: Callable[[SessionStream], None],
    ) -> None:
        self._fleet = fleet
        self._on_lost = on_lost
        self._on_orphaned = on_orphaned
        self._followers: dict[str, _Follower] = {}  # by channel
        self._bus = fleet.bus.lane(self._on_message, self._on_gap)
        self._bus_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Following({len(self._followers)})"

    async def start(self) -> None:
        self._bus_task = asyncio.create_task(self._bus.run(), name="fleet-following-bus")
        self._watch_task = asyncio.create_task(self._watch(), name="fleet-following-watch")

    async def close(self) -> None:
        tasks = [f.task for f in self._followers.values() if f.task is not None]
        tasks += [task for task in (self._bus_task, self._watch_task) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._bus_task = self._watch_task = None

    async def _watch(self) -> None:
        """Every third of the lease TTL, one round trip asks who owns the followed sessions;
        one without an owner (its owner died or stalled, its lease ran out) is reported to
        `on_orphaned`, which takes it over."""
        interval = self._fleet.lease_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            streams = [f.stream for f in self._followers.values() if f.stream is not None]
            try:
                holders = await self._fleet.leases.holders([s.session_id for s in streams])
            except FleetUnavailable as exc:
                self._fleet.availability.failed(exc)
                continue
            for stream, holder in zip(streams, holders, strict=True):
                if holder is None:
                    self._on_orphaned(stream)

    def follows(self, stream: SessionStream) -> bool:
        return isinstance(stream, FollowedStream)

    async def follow(self, session_id: str, limits: dict[str, Any]) -> FollowedStream:
        channel = self._fleet.keys.session(session_id).channel
        follower = self._followers.get(channel)
        if follower is not None and follower.stream is not None and not follower.stream.closed:
            return follower.stream
        follower = self._followers[channel] = _Follower()
        try:
            await self._bus.subscribe(channel)
            epoch, last_seq, frames = await self._first_window(session_id, limits["max_events"])
            stream = FollowedStream(session_id, epoch, **limits)
            stream.seed(last_seq, frames)
            follower.stream = stream
            await self._catch_up(follower)
        except BaseException:
            if self._followers.get(channel) is follower:
                del self._followers[channel]
                await self._bus.unsubscribe(channel)
            raise
        return stream

    async def _first_window(self, session_id: str, max_events: int) -> tuple[str, int, list[Frame]]:
        """The log to copy; the owner writes its first frame as it activates: wait for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_APPEND_WAIT_S
        while True:
            window = await read_window(self._fleet.log, session_id, max_events)
            if window is not None:
                return window
            if loop.time() > deadline:
                raise GatewayError(
                    ErrorCode.UPSTREAM_UNAVAILABLE,
                    "The session's instance has not started it yet, try again shortly",
                    session_id=session_id,
                    retry_after_ms=1000,
                )
            await asyncio.sleep(0.05)

    async def caught_up(self, stream: SessionStream, after_seq: int | None = None) -> None:
        follower = self._follower_of(stream)
        if follower is None:
            return
        await asyncio.shield(self._resync(follower))
        # A client that read frames from the owner a moment ago may be ahead of the log by the
        # owner's last append round trip: give the copy that long before calling it a gap.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + AHEAD_WAIT_S
        delay, longest = AHEAD_POLL_S
        while after_seq is not None and after_seq > stream.last_seq and loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
            if after_seq > stream.last_seq:
                await asyncio.shield(self._resync(follower))

    async def unfollow(self, stream: SessionStream) -> None:
        follower = self._follower_of(stream)
        if follower is None:
            return
        channel = self._fleet.keys.session(stream.session_id).channel
        del self._followers[channel]
        if follower.task is not None:
            follower.task.cancel()
        with suppress(FleetUnavailable):
            await self._bus.unsubscribe(channel)

    def _follower_of(self, stream: SessionStream) -> _Follower | None:
        channel = self._fleet.keys.session(stream.session_id).channel
        follower = self._followers.get(channel)
        return follower if follower is not None and follower.stream is stream else None

    # --- live messages ------------------------------------------------------------------------

    def _on_message(self, channel: str, data: bytes) -> None:
        follower = self._followers.get(channel)
        if follower is None:
            return
        message = parse_message(data)
        if message is not None and follower.buffer is not None:
            follower.buffer.append(message)
            return
        verdict = Verdict.GAP if message is None else None
        if verdict is None and follower.cursor is not None:
            verdict = follower.cursor.accept(message)  # type: ignore[arg-type]
        if verdict is Verdict.DELIVER:
            assert follower.stream is not None and message is not None
            follower.stream.relay(as_frame(message.seq, message.payload))
        elif verdict is Verdict.GAP and follower.stream is not None:
            self._resync(follower)

    def _on_gap(self, channels: frozenset[str]) -> None:
        for channel in channels:
            follower = self._followers.get(channel)
            if follower is not None and follower.stream is not None:
                self._resync(follower)

    def _resync(self, follower: _Follower) -> asyncio.Task[None]:
        """Read the log again (one reader at a time per session); the task it runs."""
        if follower.task is None or follower.task.done():
            if follower.buffer is None:
                follower.buffer = []
            follower.task = asyncio.get_running_loop().create_task(self._catch_up(follower))
        return follower.task

    async def _catch_up(self, follower: _Follower) -> None:
        """Read the log after the copy's last seq, then apply the buffered live messages;
        again after a hole, until the copy continues live."""
        stream = follower.stream
        assert stream is not None
        log, session_id = self._fleet.log, stream.session_id
        if follower.buffer is None:
            follower.buffer = []
        try:
            while True:
                read = await log.read_after(session_id, stream.last_seq, stream.epoch, READ_PAGE)
                if read.gap:
                    self._lose(follower, f"log moved on (epoch {read.epoch})")
                    return
                for event in read.events:
                    if event.seq == stream.last_seq + 1:
                        stream.relay(as_frame(event.seq, event.payload))
                if stream.last_seq < read.last_seq:
                    continue  # the next page
                cursor = Cursor(stream.epoch, stream.last_seq)
                buffered, follower.buffer = follower.buffer or [], None
                if _apply(cursor, stream, buffered):
                    follower.cursor = cursor
                    return
                follower.buffer = []  # a hole among them: read again
        except FleetUnavailable as exc:
            self._fleet.availability.failed(exc)  # the bus reconnects and reports the gap
            raise

    def _lose(self, follower: _Follower, why: str) -> None:
        stream = follower.stream
        assert stream is not None
        logger.warning("session {}: stops being followed here: {}", stream.session_id, why)
        channel = self._fleet.keys.session(stream.session_id).channel
        if self._followers.get(channel) is follower:
            del self._followers[channel]
            task = asyncio.get_running_loop().create_task(
                self._unsubscribe_unless_followed(channel)
            )
            task.add_done_callback(lambda t: t.exception())
        self._on_lost(stream.session_id, stream)

    async def _unsubscribe_unless_followed(self, channel: str) -> None:
        """The unsubscribe of a lost copy, in a task of its own: a follow of the same session
        started before it ran holds the channel again, and keeps its subscription."""
        if channel not in self._followers:
            await self._bus.unsubscribe(channel)


def _apply(cursor: Cursor, stream: FollowedStream, messages: list[LiveMessage]) -> bool:
    """Deliver `messages` after a read; False at a hole or another epoch (read again)."""
    for message in sorted(messages, key=lambda m: m.seq):
        verdict = cursor.accept(message)
        if verdict is Verdict.GAP:
            return False
        if verdict is Verdict.DELIVER:
            stream.relay(as_frame(message.seq, message.payload))
    return True
