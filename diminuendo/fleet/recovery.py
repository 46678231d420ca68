"""Recovery on any instance, without I/O: Centrifugo's merge of live pub/sub messages with a
stream read.

A reader that wants "everything after `after_seq`" on an instance that does not own the session
first subscribes to the session's channel and buffers what arrives, then reads the stream from
`after_seq` (`ReplayLog.read_after`). Every event published before the subscription is in the
stream; every event published after it is in the buffer (or in the stream too, if it came before
the read): `merge` joins the two by seq into one ordered, de-duplicated run. Anything it cannot
prove contiguous is a gap — a hole, a changed epoch, a missing log — never a silent skip.

After the merge, `Cursor.accept` applies the same rule to each live message as it arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from diminuendo.fleet.replay_log import Event, Replay


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """One pub/sub message of a session channel: `seq:epoch:payload`."""

    seq: int
    epoch: str
    payload: bytes


def parse_message(raw: bytes) -> LiveMessage | None:
    """The message the append script published, or `None` for anything malformed (it is then
    treated as lost, so the reader re-reads the stream rather than trusting it)."""
    seq, sep1, rest = raw.partition(b":")
    epoch, sep2, payload = rest.partition(b":")
    if not (sep1 and sep2 and seq.isdigit() and epoch):
        return None
    return LiveMessage(int(seq), epoch.decode("ascii", "replace"), payload)


@dataclass(frozen=True, slots=True)
class Recovered:
    events: list[Event]  # ascending, no duplicates; from after_seq + 1 unless `gap`
    gap: bool  # events after `after_seq` were lost (trimmed, new epoch, hole): rebuild
    more: bool  # the stream read stopped at its limit: read again after `events[-1]`
    epoch: str | None
    last_seq: int  # the seq of the last event in `events`, or `after_seq` when none


def merge(after_seq: int, read: Replay, live: Iterable[LiveMessage]) -> Recovered:
    """Join the stream `read` (made after subscribing) with the `live` messages buffered since
    subscribing.

    - `read.gap` (epoch changed, log missing, start trimmed) is a gap; the events that can still
      be delivered in order are returned with it (as the in-memory window does).
    - A live message of another epoch than the stream's means the log was recreated after the
      read: a gap, and only the stream's events are returned.
    - Live messages at or below the last stream seq are duplicates and dropped.
    - A hole between the stream's last event and the next live one is `more` when the stream was
      cut by its limit (the caller reads the next page and merges again), else a gap (a message
      was lost between the read and the subscription's delivery: the caller re-reads).
    """
    events = list(read.events)
    gap = read.gap
    last = events[-1].seq if events else after_seq
    if read.epoch is None or (gap and not events):
        return Recovered(events, True, False, read.epoch, last)
    more = last < read.last_seq
    for message in sorted(live, key=lambda m: m.seq):
        if message.epoch != read.epoch:
            return Recovered(events, True, False, read.epoch, last)
        if message.seq <= last:
            continue
        if message.seq != last + 1:
            return Recovered(events, gap or not more, more, read.epoch, last)
        events.append(Event(message.seq, message.payload))
        last = message.seq
    return Recovered(events, gap, more and last < read.last_seq, read.epoch, last)


class Verdict(Enum):
    DELIVER = "deliver"  # the next event: send it
    DUPLICATE = "duplicate"  # already delivered: drop it
    GAP = "gap"  # a hole or a new epoch: re-read the stream (or rebuild on a new epoch)


class Cursor:
    """Where one reader is in a session's stream once recovered; judges each live message."""

    __slots__ = ("epoch", "last_seq")

    def __init__(self, epoch: str, last_seq: int) -> None:
        self.epoch = epoch
        self.last_seq = last_seq

    def accept(self, message: LiveMessage) -> Verdict:
        """`DELIVER` advances the cursor; the other verdicts leave it where it was."""
        if message.epoch != self.epoch:
            return Verdict.GAP
        if message.seq <= self.last_seq:
            return Verdict.DUPLICATE
        if message.seq != self.last_seq + 1:
            return Verdict.GAP
        self.last_seq = message.seq
        return Verdict.DELIVER
