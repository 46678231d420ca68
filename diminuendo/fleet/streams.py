"""A session's stream in fleet mode, and the log read as a stream to continue: shared by the
owner (`ownership`), which continues the log, and followers (`following`), which copy it."""

from __future__ import annotations

from typing import Any

import msgspec

from diminuendo.fleet.replay_log import ReplayLog
from diminuendo.sessions.stream import Frame, Replay, SessionStream

__all__ = ["READ_PAGE", "FleetStream", "as_frame", "read_window"]

READ_PAGE = 500


class _Head(msgspec.Struct):
    type: str


_head = msgspec.json.Decoder(_Head).decode


class FleetStream(SessionStream):
    """A session's stream in fleet mode, the owner's or a follower's copy of it. `closed` once
    its session left memory (`close`): its `Ownership.release` comes after, so a join claiming
    the session in between must not be handed it (`Ownership._claim`, `Following.follow`)."""

    __slots__ = ("closed",)

    def __init__(self, session_id: str, epoch: str, **limits: Any) -> None:
        super().__init__(session_id, epoch, **limits)
        self.closed = False

    def close(self) -> None:
        self.closed = True
        super().close()

    def _replay(
        self,
        after_seq: int | None,
        epoch: str | None,
        limit: int | None,
        max_bytes: int | None = None,
    ) -> Replay:
        """As `SessionStream`'s, but a client *ahead* of the stream has a gap: it saw frames
        of an owner that lost the session before they reached the log, and the seqs it holds
        are another's now (in memory this cannot happen within one epoch). Followers catch up
        with the log before they answer, so a copy that merely lags never says so."""
        replay = super()._replay(after_seq, epoch, limit, max_bytes)
        if after_seq is not None and after_seq > replay.last_seq and not replay.gap:
            return replay._replace(gap=True)
        return replay

    def relay(self, frame: Frame) -> None:
        """The owner's next frame (seq `last_seq + 1`), into a follower's copy: retained and
        fanned out as `publish` does with its own (not shared with it: `publish` is the hot
        path, and one more call per frame there would cost every session without Valkey)."""
        size = len(frame.data)
        self._last_seq = frame.seq
        self._window.append(frame)
        self._bytes += size
        if len(self._window) > self._max_events or self._bytes > self._max_bytes:
            self._evict(self._max_events, self._max_bytes)
        if self._budget is not None:
            self._budget.charge(size)
        for subscriber in self._fanout:
            try:
                subscriber.deliver(frame)
            except Exception:
                self.detach(subscriber)


async def read_window(
    log: ReplayLog, session_id: str, max_events: int
) -> tuple[str, int, list[Frame]] | None:
    """The session's log as a stream to continue: its epoch, last seq and the retained frames
    (at most `max_events`, one run of consecutive seqs ending at the last), or None when Valkey
    holds no log for the session."""
    meta = await log.meta(session_id)
    if meta is None:
        return None
    epoch, last_seq = meta
    frames: list[Frame] = []
    after = max(last_seq - max_events, 0)
    while after < last_seq:
        page = await log.read_after(session_id, after, epoch, READ_PAGE)
        if page.epoch != epoch or not page.events:
            break  # the log changed under us: its next append or read says so
        frames.extend(as_frame(e.seq, e.payload) for e in page.events)
        after = page.events[-1].seq
    # The owner may append while we read: frames past the meta's last seq are not a hole, they
    # are left to the caller's catch-up (which reads after `last_seq`).
    while frames and frames[-1].seq > last_seq:
        frames.pop()
    if frames and frames[-1].seq != last_seq:
        frames = []
    return epoch, last_seq, _contiguous_tail(frames)


def as_frame(seq: int, payload: bytes) -> Frame:
    """A frame of the log as the stream holds it (its type read from the payload)."""
    return Frame(seq, _head(payload).type, payload)


def _contiguous_tail(frames: list[Frame]) -> list[Frame]:
    """The last run of consecutive seqs of `frames` (the log's retained frames normally are
    one; a trim racing the paged read could leave a hole)."""
    start = len(frames) - 1
    while start > 0 and frames[start - 1].seq == frames[start].seq - 1:
        start -= 1
    return frames[max(start, 0) :]
