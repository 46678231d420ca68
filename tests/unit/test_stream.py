"""Per-session stream: seq/epoch, replay window, fan-out (diminuendo.sessions.stream)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diminuendo.protocol.events import SessionState, TurnError, TurnStarted
from diminuendo.sessions.stream import Frame, Replay, ReplayPager, SessionStream


@dataclass  # eq=True makes it unhashable: the stream must not need hashable subscribers
class Recorder:
    frames: list[Frame] = field(default_factory=list)

    def deliver(self, frame: Frame) -> None:
        self.frames.append(frame)

    @property
    def seqs(self) -> list[int]:
        return [f.seq for f in self.frames]


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    def deliver(self, frame: Frame) -> None:
        self.calls += 1
        raise RuntimeError("send queue full")


def delta(text: str = "x") -> dict[str, Any]:
    return {"type": "text_delta", "turnId": "t1", "text": text}


def publish_n(stream: SessionStream, n: int, text: str = "x") -> list[Frame]:
    return [stream.publish(delta(text), 1000 + i) for i in range(n)]


def seqs(frames: list[Frame]) -> list[int]:
    return [f.seq for f in frames]


# ---- publish


def test_seq_starts_at_one_and_increments() -> None:
    stream = SessionStream("ses_1", "ep1")
    assert stream.last_seq == 0
    frames = publish_n(stream, 5)
    assert seqs(frames) == [1, 2, 3, 4, 5]
    assert stream.last_seq == 5
    assert (stream.session_id, stream.epoch) == ("ses_1", "ep1")


def test_frame_is_the_complete_json_with_type_first() -> None:
    stream = SessionStream("ses_1", "ep1")
    event = {"type": "tool_call", "turnId": "t1", "args": {"a": [1, None]}, "text": "é☃"}
    frame = stream.publish(event, 1764171234567)
    assert frame.type == "tool_call"
    decoded = json.loads(frame.data)
    assert list(decoded) == ["type", "sessionId", "seq", "ts", "turnId", "args", "text"]
    assert decoded == {**event, "sessionId": "ses_1", "seq": 1, "ts": 1764171234567}
    assert event == {"type": "tool_call", "turnId": "t1", "args": {"a": [1, None]}, "text": "é☃"}


def test_stream_owns_session_id_seq_and_ts() -> None:
    stream = SessionStream("ses_1", "ep1")
    frame = stream.publish({"type": "x", "sessionId": "forged", "seq": 99, "ts": 0}, 5)
    assert json.loads(frame.data) == {"type": "x", "sessionId": "ses_1", "seq": 1, "ts": 5}


def test_unencodable_event_leaves_no_hole() -> None:
    stream = SessionStream("ses_1", "ep1")
    sub = Recorder()
    stream.attach(sub)
    with pytest.raises(TypeError):
        stream.publish({"type": "x", "bad": object()}, 1)
    assert stream.last_seq == 0
    assert stream.publish(delta(), 2).seq == 1
    assert sub.seqs == [1]


# ---- window


def test_window_evicts_by_count() -> None:
    stream = SessionStream("s", "e", max_events=3)
    publish_n(stream, 10)
    assert seqs(stream.replay(0, limit=100).frames) == [8, 9, 10]


def test_window_evicts_by_utf8_bytes() -> None:
    one = len(SessionStream("s", "e").publish(delta("☃" * 10), 1000).data)
    stream = SessionStream("s", "e", max_bytes=3 * one)
    publish_n(stream, 5, "☃" * 10)  # every frame has the same encoded size as `one`
    assert seqs(stream.replay(0, limit=100).frames) == [3, 4, 5]
    stream = SessionStream("s", "e", max_bytes=3 * one - 1)
    publish_n(stream, 5, "☃" * 10)
    assert seqs(stream.replay(0, limit=100).frames) == [4, 5]


def test_frame_larger_than_the_byte_bound_is_delivered_but_not_retained() -> None:
    stream = SessionStream("s", "e", max_bytes=200)
    sub = Recorder()
    stream.attach(sub)
    stream.publish(delta("y" * 500), 1)
    assert sub.seqs == [1]
    assert stream.replay(0) == Replay(True, [], 1, "e")
    assert stream.replay(1) == Replay(False, [], 1, "e")
    stream.publish(delta(), 2)
    assert stream.replay(0) == Replay(True, [sub.frames[1]], 2, "e")
    assert stream.replay(1) == Replay(False, [sub.frames[1]], 2, "e")


# ---- attach / replay rules


def test_attach_after_seq_inside_window() -> None:
    stream = SessionStream("s", "e", max_events=5)
    frames = publish_n(stream, 8)  # retained 4..8
    replay = stream.attach(Recorder(), after_seq=5)
    assert replay == Replay(False, frames[5:], 8, "e")
    assert stream.attach(Recorder(), after_seq=3) == Replay(False, frames[3:], 8, "e")
    assert stream.attach(Recorder(), after_seq=0).gap is True  # 1..3 are gone


def test_attach_after_seq_before_window_is_a_gap_with_all_retained() -> None:
    stream = SessionStream("s", "e", max_events=5)
    frames = publish_n(stream, 8)
    assert stream.attach(Recorder(), after_seq=2) == Replay(True, frames[3:], 8, "e")


def test_attach_without_after_seq_is_live_only() -> None:
    stream = SessionStream("s", "e")
    publish_n(stream, 3)
    sub = Recorder()
    assert stream.attach(sub) == Replay(False, [], 3, "e")
    stream.publish(delta(), 9)
    assert sub.seqs == [4]


@pytest.mark.parametrize("after_seq", [3, 4, 100])
def test_attach_up_to_date_or_ahead_has_nothing_to_replay(after_seq: int) -> None:
    stream = SessionStream("s", "e")
    publish_n(stream, 3)
    assert stream.attach(Recorder(), after_seq=after_seq) == Replay(False, [], 3, "e")


def test_negative_after_seq_counts_as_zero() -> None:
    stream = SessionStream("s", "e")
    frames = publish_n(stream, 2)
    assert stream.attach(Recorder(), after_seq=-4) == Replay(False, frames, 2, "e")


@pytest.mark.parametrize("after_seq", [None, 0, 1, 3])
def test_attach_with_another_epoch_is_a_gap_without_frames(after_seq: int | None) -> None:
    stream = SessionStream("s", "e2")
    publish_n(stream, 3)
    sub = Recorder()
    assert stream.attach(sub, after_seq=after_seq, epoch="e1") == Replay(True, [], 3, "e2")
    stream.publish(delta(), 9)
    assert sub.seqs == [4]  # still subscribed for live frames


def test_matching_epoch_is_the_same_as_no_epoch() -> None:
    stream = SessionStream("s", "e")
    frames = publish_n(stream, 3)
    assert stream.attach(Recorder(), after_seq=1, epoch="e") == Replay(False, frames[1:], 3, "e")


def test_replay_limit_returns_the_first_frames() -> None:
    stream = SessionStream("s", "e")
    frames = publish_n(stream, 20)
    assert stream.replay(5, limit=3) == Replay(False, frames[5:8], 20, "e", more=True)
    assert stream.replay(17, limit=3) == Replay(False, frames[17:], 20, "e", more=False)
    assert stream.replay(15, limit=2) == Replay(False, frames[15:17], 20, "e", more=True)
    assert stream.replay(0, limit=0) == Replay(False, [], 20, "e", more=True)
    assert stream.replay(5, epoch="other") == Replay(True, [], 20, "e")


def test_replay_default_limit_is_500() -> None:
    stream = SessionStream("s", "e")
    publish_n(stream, 600)
    assert seqs(stream.replay(0).frames) == list(range(1, 501))


def test_replay_pages_by_bytes_and_says_more() -> None:
    stream = SessionStream("s", "e")
    frames = publish_n(stream, 10)
    size = len(frames[0].data)  # every frame here has the same size
    page = stream.replay(0, limit=100, max_bytes=3 * size)
    assert page == Replay(False, frames[:3], 10, "e", more=True)
    assert stream.replay(3, limit=100, max_bytes=3 * size + size - 1).frames == frames[3:6]
    assert stream.replay(8, limit=100, max_bytes=3 * size) == Replay(False, frames[8:], 10, "e")
    assert stream.replay(0, limit=2, max_bytes=10 * size).frames == frames[:2]  # count first


def test_a_frame_larger_than_a_page_still_comes_alone() -> None:
    stream = SessionStream("s", "e")
    stream.publish(delta("x" * 500), 1)
    small = stream.publish(delta(), 2)
    page = stream.replay(0, max_bytes=100)
    assert seqs(page.frames) == [1] and page.more
    assert stream.replay(1, max_bytes=100) == Replay(False, [small], 2, "e")


# ---- paged attach


def test_attach_page_that_fits_is_attach() -> None:
    stream = SessionStream("s", "e")
    frames = publish_n(stream, 4)
    sub = Recorder()
    page = stream.attach_page(sub, 1, max_frames=3, max_bytes=10_000)
    assert page == Replay(False, frames[1:], 4, "e", more=False)
    publish_n(stream, 1)
    assert sub.seqs == [5]


def test_attach_page_that_does_not_fit_does_not_subscribe() -> None:
    stream = SessionStream("s", "e")
    frames = publish_n(stream, 4)
    sub = Recorder()
    page = stream.attach_page(sub, 0, max_frames=3, max_bytes=10_000)
    assert page == Replay(False, frames[:3], 4, "e", more=True)
    publish_n(stream, 1)
    assert sub.frames == []


def test_pager_delivers_every_seq_once_while_the_session_publishes() -> None:
    stream = SessionStream("s", "e")
    publish_n(stream, 10)
    sub = Recorder()
    pager = ReplayPager(stream, sub, 2, None, max_frames=3, max_bytes=10_000)
    received: list[int] = []
    while not pager.attached:
        page = pager.next_page()
        assert not page.gap
        received += seqs(page.frames)
        publish_n(stream, 1)  # live events arrive while the subscriber drains
    publish_n(stream, 2)
    assert received + sub.seqs == list(range(3, stream.last_seq + 1))


def test_pager_reports_a_gap_when_the_window_passes_it() -> None:
    stream = SessionStream("s", "e", max_events=5)
    publish_n(stream, 5)
    pager = ReplayPager(stream, Recorder(), 0, None, max_frames=2, max_bytes=10_000)
    assert seqs(pager.next_page().frames) == [1, 2]
    publish_n(stream, 4)  # the window is now 5..9: 3 and 4 are gone
    page = pager.next_page()
    assert page.gap and seqs(page.frames) == [5, 6]


@pytest.mark.parametrize(("after_seq", "epoch"), [(None, None), (3, "other"), (7, None)])
def test_pager_with_nothing_to_page_attaches_at_once(after_seq: int | None, epoch: str | None):
    stream = SessionStream("s", "e")
    publish_n(stream, 7)
    sub = Recorder()
    pager = ReplayPager(stream, sub, after_seq, epoch, max_frames=1, max_bytes=1)
    page = pager.next_page()
    assert page.frames == [] and page.gap is (epoch is not None) and pager.attached
    publish_n(stream, 1)
    assert sub.seqs == [8]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.integers(0, 4), min_size=1, max_size=30),  # publishes between pages
    first=st.integers(0, 20),
    max_frames=st.integers(1, 6),
    max_bytes=st.integers(1, 400),
)
def test_pager_hands_over_without_duplicate_or_hole(
    steps: list[int], first: int, max_frames: int, max_bytes: int
) -> None:
    stream = SessionStream("s", "e", max_events=1000, max_bytes=10**6)
    publish_n(stream, first)
    after = first // 2
    sub = Recorder()
    pager = ReplayPager(stream, sub, after, None, max_frames=max_frames, max_bytes=max_bytes)
    received: list[int] = []
    for n in steps:
        if pager.attached:
            break
        page = pager.next_page()
        assert len(page.frames) <= max_frames
        assert len(page.frames) <= 1 or sum(len(f.data) for f in page.frames) <= max_bytes
        received += seqs(page.frames)
        publish_n(stream, n, "y" * n)
    while not pager.attached:
        received += seqs(pager.next_page().frames)
    publish_n(stream, 2)
    assert received + sub.seqs == list(range(after + 1, stream.last_seq + 1))


# ---- fan-out


def test_two_subscribers_receive_identical_sequences() -> None:
    stream = SessionStream("s", "e")
    a, b = Recorder(), Recorder()
    stream.attach(a)
    stream.attach(b)
    publish_n(stream, 4)
    assert a.seqs == [1, 2, 3, 4]
    assert all(fa is fb for fa, fb in zip(a.frames, b.frames, strict=True))  # encoded once


def test_delivery_follows_subscription_order() -> None:
    stream = SessionStream("s", "e")
    order: list[str] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def deliver(self, frame: Frame) -> None:
            order.append(self.name)

    for name in "abc":
        stream.attach(Named(name))
    stream.publish(delta(), 1)
    assert order == ["a", "b", "c"]


def test_raising_subscriber_is_detached_without_affecting_others() -> None:
    stream = SessionStream("s", "e")
    a, b, exploding = Recorder(), Recorder(), Exploding()
    stream.attach(a)
    stream.attach(exploding)
    stream.attach(b)
    publish_n(stream, 3)
    assert a.seqs == b.seqs == [1, 2, 3]
    assert exploding.calls == 1  # detached at its first failure


def test_subscriber_detaching_itself_during_delivery() -> None:
    stream = SessionStream("s", "e")
    after = Recorder()

    class Once:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def deliver(self, frame: Frame) -> None:
            self.seen.append(frame.seq)
            stream.detach(self)

    once = Once()
    stream.attach(once)
    stream.attach(after)
    publish_n(stream, 2)
    assert once.seen == [1]
    assert after.seqs == [1, 2]


def test_reattach_does_not_duplicate() -> None:
    stream = SessionStream("s", "e")
    sub = Recorder()
    stream.attach(sub)
    stream.attach(sub, after_seq=0)
    stream.publish(delta(), 1)
    assert sub.seqs == [1]


def test_detach_is_idempotent() -> None:
    stream = SessionStream("s", "e")
    sub = Recorder()
    stream.detach(sub)  # never attached
    stream.attach(sub)
    stream.detach(sub)
    stream.detach(sub)
    stream.publish(delta(), 1)
    assert sub.frames == []


# ---- the attach contract, under random interleavings


def test_hand_over_has_no_duplicate_and_no_hole() -> None:
    stream = SessionStream("s", "e")
    publish_n(stream, 5)
    sub = Recorder()
    replay = stream.attach(sub, after_seq=2)  # the caller enqueues snapshot + replay.frames now
    publish_n(stream, 3)
    assert seqs(replay.frames) + sub.seqs == [3, 4, 5, 6, 7, 8]


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(0, 40)),  # text length
        st.tuples(st.just("attach"), st.integers(-2, 3) | st.none()),  # after_seq offset
        st.tuples(st.just("detach"), st.integers(0, 10)),
        st.tuples(st.just("replay"), st.integers(0, 30), st.integers(0, 8)),  # after_seq, limit
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=_ops, max_events=st.integers(1, 8), max_bytes=st.integers(60, 600))
def test_random_interleavings(ops: list[tuple[Any, ...]], max_events: int, max_bytes: int) -> None:
    stream = SessionStream("s", "e", max_events=max_events, max_bytes=max_bytes)
    published: list[Frame] = []
    # each attachment: (subscriber, replay, seq of the first frame it must see)
    attached: list[tuple[Recorder, Replay, int]] = []
    live: list[Recorder] = []  # attached and not detached

    def retained() -> list[Frame]:
        # Independent model: the newest frames fitting both bounds.
        kept: list[Frame] = []
        total = 0
        for f in reversed(published):
            total += len(f.data)
            if len(kept) == max_events or total > max_bytes:
                break
            kept.append(f)
        return kept[::-1]

    def expected(after_seq: int, limit: int) -> Replay:
        window = retained()
        first = window[0].seq if window else len(published) + 1
        seen = max(after_seq, 0)
        gap = seen < len(published) and seen < first - 1
        after = [f for f in window if f.seq > after_seq]
        return Replay(gap, after[:limit], len(published), "e", len(after) > limit)

    for op in ops:
        if op[0] == "publish":
            published.append(stream.publish(delta("z" * op[1]), len(published)))
        elif op[0] == "attach":
            sub = Recorder()
            after = None if op[1] is None else len(published) + op[1]
            replay = stream.attach(sub, after_seq=after)
            if after is None:
                assert replay == Replay(False, [], len(published), "e")
                start = len(published) + 1
            else:
                assert replay == expected(after, 10**9)
                start = replay.frames[0].seq if replay.frames else len(published) + 1
                if not replay.gap:
                    assert start == max(after, 0) + 1 or after >= len(published)
            attached.append((sub, replay, start))
            live.append(sub)
        elif op[0] == "detach" and attached:
            sub = attached[op[1] % len(attached)][0]
            stream.detach(sub)
            stream.detach(sub)
            live[:] = [x for x in live if x is not sub]
        elif op[0] == "replay":
            assert stream.replay(op[1], limit=op[2]) == expected(op[1], op[2])

    # One more frame reaches exactly the subscribers still attached.
    published.append(stream.publish(delta(), len(published)))
    for sub, replay, start in attached:
        received = seqs(replay.frames) + sub.seqs
        # Consecutive from where it started, no duplicate, no hole, up to where it left.
        assert received == list(range(start, start + len(received)))
        if any(x is sub for x in live):
            assert received == list(range(start, len(published) + 1))
        else:
            assert len(published) not in sub.seqs


@pytest.mark.parametrize(
    ("as_dict", "as_struct"),
    [
        (
            {"type": "session_state", "state": "running", "previous": "ready"},
            SessionState(state="running", previous="ready"),
        ),
        (
            {"type": "session_state", "state": "inactive", "previous": "x", "reason": "idle"},
            SessionState(state="inactive", previous="x", reason="idle"),
        ),
        ({"type": "turn_started", "turnId": "t"}, TurnStarted(turn_id="t")),
        (
            {"type": "turn_started", "turnId": "t", "clientTurnId": "c"},
            TurnStarted(turn_id="t", client_turn_id="c"),
        ),
        (
            {"type": "turn_error", "turnId": "t", "code": "UPSTREAM_ERROR", "message": "m"},
            TurnError(turn_id="t", code="UPSTREAM_ERROR", message="m"),
        ),
    ],
)
def test_a_typed_frame_publishes_the_bytes_of_its_dict(as_dict, as_struct) -> None:
    """The session's own frames are `protocol.events` structs; the wire is unchanged."""
    a, b = SessionStream("s", "e"), SessionStream("s", "e")
    assert a.publish(as_dict, 7) == b.publish(as_struct, 7)
