"""One session's outbound event stream: seq/epoch, the bounded replay window, fan-out.

Sans-I/O (in the manner of h11): no sockets, no asyncio, no clock. The gateway hands in events and
the time, and receives encoded frames through `Subscriber.deliver`. Everything here runs
synchronously, which is what makes the attach contract (snapshot → replay → live, with no
duplicate and no hole) hold without locks: no other code can run between two statements of one
method.

`seq` counts from 1 within the stream's `epoch` and is never reused; a new epoch is a new
`SessionStream` (PROTOCOL.md §7).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any, NamedTuple, Protocol

import msgspec
from msgspec.structs import replace

from diminuendo.protocol.events import SessionEvent
from diminuendo.sessions.budget import ReplayBudget

__all__ = ["Frame", "Replay", "ReplayPager", "SessionStream", "Subscriber", "fitting"]

_encoder = msgspec.json.Encoder()


class Frame(msgspec.Struct, frozen=True, gc=False):
    """One published event, encoded once and shared by every subscriber and the window.

    `gc=False`: a replay window holds thousands of these per busy session, and they reference
    only an int, a str and bytes, so the cycle collector has nothing to find in them. A
    NamedTuple stays tracked (CPython untracks only exact tuples), which made every retained
    frame part of every full collection: the windows of 2,000 streaming sessions grew the old
    generation by 10,000 objects a second, and the resulting collections stalled the event
    loop for up to half a second (the whole stream p99)."""

    seq: int
    type: str
    data: bytes  # the complete JSON text of the frame (UTF-8), sent as it is


class Subscriber(Protocol):
    """A receiver of live frames, typically one client connection joined to the session."""

    def deliver(self, frame: Frame) -> None:
        """Take one frame. Must not block and must not call back into `publish`: the gateway's
        connection puts it on its bounded send queue and returns."""


class Replay(NamedTuple):
    """The answer to "what did I miss after `after_seq`?" (join_session, get_events)."""

    gap: bool  # events the client has not seen are gone: rebuild from get_history
    frames: list[Frame]  # retained frames after after_seq, in seq order
    last_seq: int  # the stream's last seq at the time of the answer
    epoch: str  # the stream's current epoch
    more: bool = False  # retained frames follow the last of `frames` (a page stopped early)


class SessionStream:
    """Stamps, encodes, retains and fans out one session's events.

    The replay window keeps the newest frames within both `max_events` and `max_bytes` (UTF-8
    size of the encoded frames), evicting the oldest first. The byte bound is strict: a single
    frame larger than `max_bytes` is delivered live but not retained, and a client that missed it
    gets `gap=True`. Retained frames always form one run of consecutive seqs ending at
    `last_seq`; the gap rules rely on it.
    """

    __slots__ = (
        "_budget",
        "_bytes",
        "_epoch",
        "_fanout",
        "_last_seq",
        "_max_bytes",
        "_max_events",
        "_session_id",
        "_subscribers",
        "_window",
    )

    def __init__(
        self,
        session_id: str,
        epoch: str,
        *,
        max_events: int = 10_000,
        max_bytes: int = 8 * 1024 * 1024,
        budget: ReplayBudget | None = None,
    ) -> None:
        self._session_id = session_id
        self._epoch = epoch
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._last_seq = 0
        self._window: deque[Frame] = deque()
        self._bytes = 0
        self._budget = budget
        if budget is not None:
            budget.register(self)
        # Keyed by id() so subscribers need not be hashable; insertion order is delivery order.
        self._subscribers: dict[int, Subscriber] = {}
        # Snapshot iterated by publish, rebuilt on (rare) attach/detach, so a subscriber that
        # attaches or detaches during delivery cannot disturb the loop.
        self._fanout: tuple[Subscriber, ...] = ()

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def last_seq(self) -> int:
        """The seq of the newest published event; 0 before the first."""
        return self._last_seq

    @property
    def retained_bytes(self) -> int:
        """Encoded size of the frames in the replay window."""
        return self._bytes

    def publish(self, event: dict[str, Any] | SessionEvent, ts_ms: int) -> Frame:
        """Stamp `event` with the next seq, encode it once, retain it and deliver it to every
        subscriber in subscription order. `event` is a runtime event as `mapping.py` made it (a
        dict with a `type`: the hot path, left as it is) or one of the gateway's own frames (a
        `protocol.events` struct).

        The frame is `{"type", "sessionId", "seq", "ts", …rest of event}`. The stream owns
        `sessionId`, `seq` and `ts`: values for them in `event` are overwritten, so a caller
        can never forge or break the sequence.

        A subscriber whose `deliver` raises is detached and the others still get the frame: one
        broken connection must not starve the rest, and the gateway closes that connection itself
        (it recovers by rejoining with `afterSeq`).
        """
        seq = self._last_seq + 1
        session_id = self._session_id
        try:
            kind = event["type"]  # type: ignore[index]  # a mapped runtime event: the hot path
        except TypeError:  # one of the session's own frames, a struct
            kind = event.type  # type: ignore[union-attr]
            raw = _encoder.encode(replace(event, session_id=session_id, seq=seq, ts=ts_ms))
        else:
            message = {"type": kind, "sessionId": session_id, "seq": seq, "ts": ts_ms}
            message.update(event)
            message["sessionId"] = session_id
            message["seq"] = seq
            message["ts"] = ts_ms
            raw = _encoder.encode(message)
        frame = Frame(seq, kind, raw)
        # Advance seq only once encoding succeeded, so an unencodable event leaves no hole.
        self._last_seq = seq

        size = len(raw)
        self._window.append(frame)
        self._bytes += size
        if len(self._window) > self._max_events or self._bytes > self._max_bytes:
            self._evict(self._max_events, self._max_bytes)
        if self._budget is not None:
            self._budget.charge(size)  # after the evictions above, which it was told of

        for subscriber in self._fanout:
            try:
                subscriber.deliver(frame)
            except Exception:
                self.detach(subscriber)
        return frame

    def seed(self, last_seq: int, frames: list[Frame]) -> None:
        """Continue a stream kept elsewhere (fleet mode: the session's log in Valkey), before
        any publish or subscriber: `last_seq` is the stream's last seq, `frames` the retained
        run of consecutive seqs ending at it (possibly fewer, or none), oldest first. The
        window's bounds and the budget apply as to published frames."""
        assert self._last_seq == 0 and not self._window, "seed a new stream only"
        assert not frames or frames[-1].seq == last_seq, "the retained frames end at last_seq"
        self._last_seq = last_seq
        self._window.extend(frames)
        self._bytes = sum(len(frame.data) for frame in frames)
        if self._budget is not None:
            self._budget.charge(self._bytes)  # before evicting, which releases what it frees
        self._evict(self._max_events, self._max_bytes)

    def trim_to(self, max_bytes: int) -> None:
        """Evict oldest frames until at most `max_bytes` are retained (the process-wide
        `ReplayBudget` asks this of the largest windows)."""
        self._evict(self._max_events, max_bytes)

    def close(self) -> None:
        """The session leaves memory: hand its retained bytes back to the budget."""
        if self._budget is not None:
            self._budget.unregister(self)
            self._budget = None

    def _evict(self, max_events: int, max_bytes: int) -> None:
        window = self._window
        freed = 0
        while window and (len(window) > max_events or self._bytes - freed > max_bytes):
            freed += len(window.popleft().data)
        self._bytes -= freed
        if self._budget is not None:
            self._budget.release(freed)

    def attach(
        self, subscriber: Subscriber, after_seq: int | None = None, epoch: str | None = None
    ) -> Replay:
        """Register `subscriber` for live frames and return what it missed after `after_seq`.

        Contract: this is synchronous, so nothing is published between computing the replay and
        registering the subscriber. It does not deliver the replay frames itself; the caller must,
        in the same synchronous step (before its next `await`), enqueue its `state_snapshot` and
        then `replay.frames`. Every later `publish` delivers seq `last_seq + 1` onwards, so the
        client sees snapshot → replay → live with no duplicate and no hole.

        Replay rules (shared with `replay`):
        * `epoch` given and not the current one → `gap=True`, no frames: seqs of another epoch
          mean nothing here, so the client must rebuild from history. This applies even when
          `after_seq` is None.
        * `after_seq` None → live only: no frames, `gap=False`.
        * events after `after_seq` already evicted → `gap=True` with every retained frame.
        * `after_seq >= last_seq` → no frames, `gap=False`; a client "ahead" of the stream has
          nothing to replay (it should not happen within one epoch).
        * a negative `after_seq` counts as 0 ("seen nothing").

        Attaching a subscriber that is already attached keeps one registration (and its place in
        the delivery order).
        """
        replay = self._replay(after_seq, epoch, None)
        self._register(subscriber)
        return replay

    def _register(self, subscriber: Subscriber) -> None:
        if id(subscriber) not in self._subscribers:
            self._subscribers[id(subscriber)] = subscriber
            self._fanout = (*self._fanout, subscriber)

    def detach(self, subscriber: Subscriber) -> None:
        """Stop live delivery to `subscriber`. Idempotent: leaving twice, or after a failed
        delivery already detached it, is fine."""
        if self._subscribers.pop(id(subscriber), None) is not None:
            self._fanout = tuple(self._subscribers.values())

    def replay(
        self,
        after_seq: int,
        epoch: str | None = None,
        limit: int = 500,
        max_bytes: int | None = None,
    ) -> Replay:
        """One page of the retained frames after `after_seq`, by the rules of `attach`, without
        subscribing (`get_events`): at most `limit` frames and at most `max_bytes` of them
        (encoded size), but always at least one frame when there is one, so that paging always
        moves on. `more` says retained frames follow the page: the client asks again from
        the page's last seq."""
        return self._replay(after_seq, epoch, max(limit, 0), max_bytes)

    def attach_page(
        self,
        subscriber: Subscriber,
        after_seq: int | None,
        epoch: str | None = None,
        *,
        max_frames: int,
        max_bytes: int,
    ) -> Replay:
        """`attach`, in pages, for a replay longer than the subscriber can hold at once.

        Contract: when everything after `after_seq` fits in one page (`max_frames`,
        `max_bytes`, at least one frame), this is exactly `attach`: the subscriber is
        registered and the whole replay returned (`more=False`), to be delivered before the
        caller's next `await`. Otherwise the subscriber is not registered and the first page is
        returned (`more=True`); the caller delivers it, waits until the subscriber has drained,
        and calls again with `after_seq` set to the page's last seq. Events published meanwhile
        join the window and come in a later page, so the subscriber still sees every seq once,
        in order, and is registered only once it has caught up.

        A later page with `gap=True` means the window moved past the subscriber's position while
        it drained (the session publishes faster than it reads): its stream has a hole, and the
        caller drops it as a slow consumer (it rejoins and gets `gap: true`). The rules of
        `attach` apply otherwise, `epoch` included.
        """
        replay = self._replay(after_seq, epoch, max_frames, max_bytes)
        if not replay.more:
            self._register(subscriber)
        return replay

    def _replay(
        self,
        after_seq: int | None,
        epoch: str | None,
        limit: int | None,
        max_bytes: int | None = None,
    ) -> Replay:
        last_seq = self._last_seq
        if epoch is not None and epoch != self._epoch:
            return Replay(True, [], last_seq, self._epoch)
        if after_seq is None or after_seq >= last_seq:
            return Replay(False, [], last_seq, self._epoch)
        after_seq = max(after_seq, 0)
        window = self._window
        first_seq = last_seq - len(window) + 1  # retained seqs are first_seq..last_seq
        gap = after_seq < first_seq - 1
        start = max(after_seq + 1 - first_seq, 0)
        available = len(window) - start
        count = available if limit is None else min(available, limit)
        if start > len(window) // 2:
            # Reconnects usually miss only the newest few frames: walk from the right end.
            frames = list(islice(reversed(window), available))
            frames.reverse()
            del frames[count:]
        else:
            frames = list(islice(window, start, start + count))
        if max_bytes is not None:
            del frames[fitting((f.data for f in frames), max_bytes) :]
        return Replay(gap, frames, last_seq, self._epoch, len(frames) < available)


def fitting(payloads: Iterable[bytes], max_bytes: int) -> int:
    """How many of the first `payloads` fit in `max_bytes` together (at least one, so that
    paging always moves on; `get_events` pages from memory and from a fleet log alike)."""
    total = count = 0
    for payload in payloads:
        total += len(payload)
        if total > max_bytes:
            return max(count, 1)
        count += 1
    return count


class ReplayPager:
    """Walks one subscriber through `SessionStream.attach_page` until it is attached: each
    `next_page` continues from the last seq handed out. Pure; the edge decides when the
    subscriber has drained enough for the next page."""

    __slots__ = ("_after_seq", "_epoch", "_max_bytes", "_max_frames", "_stream", "_subscriber")

    def __init__(
        self,
        stream: SessionStream,
        subscriber: Subscriber,
        after_seq: int | None,
        epoch: str | None,
        *,
        max_frames: int,
        max_bytes: int,
    ) -> None:
        self._stream: SessionStream | None = stream
        self._subscriber = subscriber
        self._after_seq = after_seq
        self._epoch = epoch
        self._max_frames = max(max_frames, 1)
        self._max_bytes = max_bytes

    @property
    def attached(self) -> bool:
        """The replay is complete and the subscriber receives live frames."""
        return self._stream is None

    def next_page(self) -> Replay:
        """The next page (see `attach_page`); after the one with `more=False` the subscriber is
        attached and there are no more pages."""
        stream = self._stream
        assert stream is not None, "the replay is complete"
        page = stream.attach_page(
            self._subscriber,
            self._after_seq,
            self._epoch,
            max_frames=self._max_frames,
            max_bytes=self._max_bytes,
        )
        if page.more:
            self._after_seq = page.frames[-1].seq
            self._epoch = page.epoch
        else:
            self._stream = None
        return page
