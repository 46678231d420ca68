"""The recovery merge (`diminuendo.fleet.recovery`): random interleavings of a stream read and
buffered live messages — duplicates, holes, trimming, paging, a new epoch — never give a silent
hole, a duplicate or a reorder."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from diminuendo.fleet.recovery import Cursor, LiveMessage, Verdict, merge, parse_message
from diminuendo.fleet.replay_log import Event, Replay

EPOCH, NEW_EPOCH = "e1e1e1e1e1e1e1e1", "e2e2e2e2e2e2e2e2"


def payload(epoch: str, seq: int) -> bytes:
    return f"{epoch}/{seq}".encode()


def stream_read(after_seq: int, published: int, first_retained: int, limit: int) -> Replay:
    """What `ReplayLog.read_after` answers when seqs 1..published were appended and the ones
    before `first_retained` trimmed."""
    if after_seq >= published:
        return Replay(False, [], published, EPOCH)
    start = max(after_seq + 1, first_retained)
    seqs = range(start, min(published, start + limit - 1) + 1)
    events = [Event(s, payload(EPOCH, s)) for s in seqs]
    return Replay(not events or events[0].seq != after_seq + 1, events, published, EPOCH)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, Replay, list[LiveMessage], int]:
    total = draw(st.integers(0, 40))  # events published in the epoch, in the end
    subscribed_at = draw(st.integers(0, total))  # live messages are those after it
    read_at = draw(st.integers(subscribed_at, total))  # the stream read sees 1..read_at
    after_seq = draw(st.integers(0, total))
    first_retained = draw(st.integers(1, read_at + 1))
    limit = draw(st.integers(1, 50))
    live = [LiveMessage(s, EPOCH, payload(EPOCH, s)) for s in range(subscribed_at + 1, total + 1)]
    dropped = draw(st.sets(st.integers(subscribed_at + 1, max(total, subscribed_at + 1))))
    live = [m for m in live if m.seq not in dropped]
    live += draw(st.lists(st.sampled_from(live), max_size=5)) if live else []
    if draw(st.booleans()):  # the log was lost and recreated after the read
        live += [LiveMessage(s, NEW_EPOCH, payload(NEW_EPOCH, s)) for s in range(1, 4)]
    live = draw(st.permutations(live))
    return after_seq, stream_read(after_seq, read_at, first_retained, limit), live, total


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_the_merge_never_yields_a_silent_hole_a_duplicate_or_a_reorder(
    scenario: tuple[int, Replay, list[LiveMessage], int],
) -> None:
    after_seq, read, live, _total = scenario
    result = merge(after_seq, read, live)
    seqs = [e.seq for e in result.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True  # ordered, no dup
    assert all(e.payload == payload(EPOCH, e.seq) for e in result.events)  # right epoch, event
    assert result.last_seq == (seqs[-1] if seqs else after_seq)
    if not result.gap:
        assert not seqs or seqs[0] == after_seq + 1  # nothing skipped at the start
    if not result.gap and not result.more:
        # Complete: everything the stream read had after after_seq was delivered.
        assert result.last_seq >= read.last_seq or after_seq >= read.last_seq


@given(scenarios())
def test_without_loss_the_merge_delivers_everything_after_after_seq(
    scenario: tuple[int, Replay, list[LiveMessage], int],
) -> None:
    after_seq, read, _live, total = scenario
    if read.gap:
        return
    every_live = [
        LiveMessage(s, EPOCH, payload(EPOCH, s)) for s in range(read.last_seq + 1, total + 1)
    ]
    result = merge(after_seq, read, every_live)
    if not result.more:
        assert not result.gap
        assert [e.seq for e in result.events] == list(range(after_seq + 1, total + 1))


def test_a_missing_log_and_another_epoch_are_gaps() -> None:
    assert merge(3, Replay(True, [], 0, None), []).gap
    changed = merge(3, Replay(True, [], 9, EPOCH), [LiveMessage(10, EPOCH, b"x")])
    assert changed.gap and changed.events == []


def test_a_paged_read_is_more_not_a_gap() -> None:
    read = Replay(False, [Event(1, b"a"), Event(2, b"b")], 5, EPOCH)
    result = merge(0, read, [LiveMessage(6, EPOCH, b"f")])
    assert (result.gap, result.more, result.last_seq) == (False, True, 2)


def test_the_cursor_delivers_in_order_and_flags_holes_and_new_epochs() -> None:
    cursor = Cursor(EPOCH, 4)
    assert cursor.accept(LiveMessage(4, EPOCH, b"")) is Verdict.DUPLICATE
    assert cursor.accept(LiveMessage(5, EPOCH, b"")) is Verdict.DELIVER
    assert cursor.accept(LiveMessage(7, EPOCH, b"")) is Verdict.GAP
    assert cursor.accept(LiveMessage(6, NEW_EPOCH, b"")) is Verdict.GAP
    assert cursor.last_seq == 5


def test_parse_message_keeps_colons_in_the_payload_and_refuses_junk() -> None:
    parsed = parse_message(b'12:e1e1:{"a":"b:c"}')
    assert parsed == LiveMessage(12, "e1e1", b'{"a":"b:c"}')
    for junk in (b"", b"x:e:p", b"12", b"12:e1", b"-1:e:p", b"12::p"):
        assert parse_message(junk) is None
