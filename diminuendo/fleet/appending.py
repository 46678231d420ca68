"""The owner's appends: each session's frames on their way to its log in Valkey, and the one
writer per instance that sends them.

`LoggedStream` is the owner's stream: `SessionStream.publish` plus one list append per frame
(`LogAppender.push`), so the hot path stays what it is without Valkey. The instance's one
`LogWriter` sends the pending frames of every owned session in one pipeline per round trip
(`ReplayLog.append_batches`, at most `MAX_BATCH` frames), each session's in order: the append
script checks the lease's fencing token and that each seq continues the log, so the log is the
owner's stream or nothing. A session's refusal (`Fenced`, `Diverged`) stops that session only;
Valkey unreachable keeps everything pending and retries with backoff.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from diminuendo.fleet.connection import Fenced, FleetError, FleetUnavailable
from diminuendo.fleet.lease import Lease
from diminuendo.fleet.replay_log import Batch, Diverged
from diminuendo.fleet.streams import FleetStream
from diminuendo.protocol.events import SessionEvent
from diminuendo.sessions.stream import Frame

if TYPE_CHECKING:  # the Fleet gives the writer its log and availability
    from diminuendo.fleet.runtime import Fleet

__all__ = ["LogAppender", "LogWriter", "LoggedStream"]

MAX_BATCH = 1024  # frames per round trip, all sessions together: bounds one pipeline's size
# Pipelines in flight at once: Valkey runs one pass's scripts while the next one is packed. One
# at a time, the writer fell behind at 11,000 frames/s per instance and a follower's frames came
# seconds late (bench/RESULTS.md, the fleet at 5,000 sessions).
MAX_IN_FLIGHT = 4
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0


class LogAppender:
    """One session's frames on their way to its log, in seq order; the `LogWriter` sends them.

    Valkey unreachable: the frames stay pending and are resent with backoff (the script answers
    a resent entry without appending it twice) while the lease lasts; the renewer reports the
    lease lost after a whole TTL without Valkey, and the session stops here. Refused (`Fenced`,
    `Diverged`): everything pending is dropped and `on_refused` is told once."""

    __slots__ = (
        "_drained",
        "_epoch",
        "_lease",
        "_on_refused",
        "_pending",
        "_writer",
        "in_flight",
        "queued",
        "stopped",
    )

    def __init__(
        self, writer: LogWriter, lease: Lease, epoch: str, on_refused: Callable[[FleetError], None]
    ) -> None:
        self._writer = writer
        self._lease = lease
        self._epoch = epoch
        self._on_refused = on_refused
        self._pending: list[tuple[int, bytes]] = []
        self._drained: asyncio.Future[None] | None = None
        self.queued = False  # in the writer's queue
        self.in_flight = False  # frames of it in a pipeline: it waits for that one's answer
        self.stopped = False

    def push(self, seq: int, payload: bytes) -> None:
        if self.stopped:
            return
        self._pending.append((seq, payload))
        if not self.queued:
            self._writer.queue(self)

    def stop(self) -> None:
        self.stopped = True
        self._pending.clear()
        self._settle()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every pushed frame is appended (or refused); False after `timeout_s`."""
        if not self._pending:
            return True
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._drained), timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def pending(self) -> bool:
        return bool(self._pending) and not self.stopped

    def batch(self, room: int) -> Batch:
        """The next (at most `room`) pending frames, oldest first, as the writer sends them."""
        lease = self._lease
        return Batch(lease.session_id, self._pending[:room], lease.token, self._epoch)

    def appended(self, count: int) -> None:
        """The writer's report: the first `count` pending frames are in the log."""
        del self._pending[:count]
        if not self._pending:
            self._settle()

    def refused(self, exc: FleetError) -> None:
        if not self.stopped:
            self.stop()
            self._on_refused(exc)

    def _settle(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


class LogWriter:
    """The instance's appends to the replay logs: up to `MAX_IN_FLIGHT` sender tasks, each
    sending, per round trip, one pipeline with the pending frames of the queued sessions (at most
    `MAX_BATCH`, sessions taken in turn) — not a task and a round trip per session, which at a few
    frames per second each cost every frame a round trip of its own.

    A session is never in two round trips at once (`in_flight`: a sender skips it, and the pass
    that holds it queues it again when answered), so its frames reach its log in order. A
    session's refusal (`Fenced`, `Diverged`) stops that session only. Valkey unreachable: every
    session of the pass stays pending and its sender retries with backoff; another error of one
    session's script keeps it pending the same way."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._queue: deque[LogAppender] = deque()
        self._senders: set[asyncio.Task[None]] = set()
        # A sender was started and has not taken the queue yet: it will take what is queued now,
        # so a frame does not start a task of its own (the per-frame path).
        self._starting = False

    def queue(self, appender: LogAppender) -> None:
        appender.queued = True
        self._queue.append(appender)
        if not self._starting and len(self._senders) < MAX_IN_FLIGHT:
            self._starting = True
            sender = asyncio.get_running_loop().create_task(self._run())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while self._queue:
            if await self._pass():
                delay = RETRY_FIRST_S
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _pass(self) -> bool:
        """One pipeline; False when something must be retried later."""
        self._starting = False  # what is queued from now on needs another sender
        taken: list[tuple[LogAppender, Batch]] = []
        room = MAX_BATCH
        while self._queue and room:
            appender = self._queue.popleft()
            appender.queued = False
            if appender.pending and not appender.in_flight:
                appender.in_flight = True
                batch = appender.batch(room)
                taken.append((appender, batch))
                room -= len(batch.entries)
        if not taken:
            return True
        done = True
        try:
            refusals = await self._fleet.log.append_batches([batch for _, batch in taken])
        except FleetUnavailable as exc:
            self._fleet.availability.failed(exc)
            done = False
        else:
            for (appender, batch), refusal in zip(taken, refusals, strict=True):
                if refusal is None:
                    appender.appended(len(batch.entries))
                elif isinstance(refusal, Fenced | Diverged):
                    appender.refused(refusal)
                else:
                    logger.warning("session {}: log append failed: {}", batch.session_id, refusal)
                    done = False
        finally:
            for appender, _ in taken:
                appender.in_flight = False
        for appender, _ in taken:
            if appender.pending and not appender.queued:
                self.queue(appender)
        return done


class LoggedStream(FleetStream):
    """The owner's stream: every frame also goes to the session's log."""

    __slots__ = ("appender",)

    def __init__(self, session_id: str, epoch: str, appender: LogAppender, **limits: Any) -> None:
        super().__init__(session_id, epoch, **limits)
        self.appender = appender

    def publish(self, event: dict[str, Any] | SessionEvent, ts_ms: int) -> Frame:
        frame = super().publish(event, ts_ms)
        self.appender.push(frame.seq, frame.data)
        return frame
