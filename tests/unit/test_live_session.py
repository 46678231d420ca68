"""LiveSession (diminuendo.sessions.live): the turn state machine, sans-I/O, with a fake clock.

The property tests feed random runtime event sequences, interleaved with the commands the
activation and turn code give (start a turn, the runtime attached or lost, deactivate, delete),
and check what a client would notice on the stream: `seq` contiguous; exactly one `turn_complete`
or `turn_error` per `turn_started`; no delta of a turn after its end; no held text when any other
event goes out; no deadline left after deactivate and delete. No network, no event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diminuendo.protocol.errors import ErrorCode
from diminuendo.protocol.models import SessionRecord
from diminuendo.sessions.activation import Activator
from diminuendo.sessions.budget import ReplayBudget
from diminuendo.sessions.capacity import Limits
from diminuendo.sessions.live import LiveSession, PublishCount, Turn
from diminuendo.sessions.records import Persister, RecordStore
from diminuendo.sessions.state import SessionStatus
from diminuendo.sessions.stream import Frame, SessionStream

S = SessionStatus
WINDOW = 0.010


@dataclass
class Recorder:
    """A subscriber that decodes every frame and notes whether text was held as it went out."""

    live: LiveSession | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    held_at: list[str] = field(default_factory=list)

    def deliver(self, frame: Frame) -> None:
        event = msgspec.json.decode(frame.data)
        assert self.live is not None
        if event["type"] != "text_delta" and self.live.deadline is not None:
            self.held_at.append(event["type"])
        self.frames.append(event)


class Harness:
    """A LiveSession on a real SessionStream, with a fake clock, driven as the service does."""

    def __init__(self) -> None:
        self.now = 100.0
        self.turn_ends = 0
        self.recorder = Recorder()
        stream = SessionStream("ses_1", "epoch1")
        stream.attach(self.recorder, None, None)
        self.count = PublishCount()
        self.live = LiveSession(
            stream,
            count=self.count,
            on_turn_end=self._turn_ended,
            wall_ms=lambda: int(self.now * 1000),
        )
        self.recorder.live = self.live
        self.turns = 0
        self.fed_text: dict[str, list[str]] = {}  # turn id → text fed while it was current

    def _turn_ended(self) -> None:
        self.turn_ends += 1

    @property
    def current(self) -> str | None:
        return self.live.turn.turn_id if self.live.turn is not None else None

    def advance(self, dt: float) -> None:
        """Time passes; the driver's timer fires at the deadline."""
        self.now += dt
        deadline = self.live.deadline
        while deadline is not None and deadline <= self.now:
            deadline = self.live.tick(self.now)

    def activate(self) -> None:
        if self.live.status in (S.INACTIVE, S.ERROR):
            self.live.set_status(S.ACTIVATING)
            self.live.activated()

    def start(self) -> None:
        self.activate()
        if self.live.status == S.READY and self.live.turn is None:
            self.turns += 1
            self.live.start_turn(Turn(f"trn_{self.turns}", "hi", int(self.now * 1000)))

    def runtime(self, event: dict[str, Any]) -> None:
        """A runtime event: only while a runtime socket is attached (ready, running, waiting)."""
        if self.live.status not in (S.READY, S.RUNNING, S.WAITING):
            return
        turn_id = event.get("turnId")
        if event["type"] == "text_delta" and turn_id is not None and turn_id == self.current:
            self.fed_text.setdefault(turn_id, []).append(event["text"])
        self.live.receive(event, self.now)

    def turn_id(self, which: str) -> str | None:
        ended = [f"trn_{n}" for n in range(1, self.turns + 1) if f"trn_{n}" != self.current]
        return {
            "current": self.current,
            "ended": ended[-1] if ended else None,
            "foreign": "trn_foreign",
            "none": None,
        }[which]

    def deactivate(self) -> None:
        """As `Activator.deactivate` does to the live half (sessions idle or not)."""
        if self.live.status != S.INACTIVE:
            self.live.set_status(S.DEACTIVATING, "idle")
            self.live.set_status(S.INACTIVE, "idle")

    def delete(self) -> None:
        """As `Activator.forget` does to the live half."""
        self.live.set_status(S.DEACTIVATING, "deleted")


WHICH = st.sampled_from(["current", "ended", "foreign", "none"])
ACTIONS = st.one_of(
    st.tuples(st.just("start")),
    st.tuples(st.just("delta"), WHICH, st.text(min_size=1, max_size=8)),
    st.tuples(st.just("wait"), st.floats(0, 3 * WINDOW)),
    st.tuples(st.just("question"), st.sampled_from(["q1", "q2"])),
    st.tuples(st.just("resolved"), st.sampled_from(["q1", "q2"])),
    st.tuples(st.just("usage"), st.integers(0, 5)),
    st.tuples(st.just("tool")),
    st.tuples(st.just("runtime_started")),
    st.tuples(st.just("end"), st.sampled_from(["turn_complete", "turn_error"]), WHICH),
    st.tuples(st.just("lost")),
    st.tuples(st.just("attached"), st.sampled_from([None, "current", "adopt"]), st.booleans()),
)


def _delta(h: Harness, which: str, text: str) -> None:
    h.runtime(with_turn({"type": "text_delta", "text": text}, h.turn_id(which)))
    h.advance(0.001)


def _question(h: Harness, request_id: str) -> None:
    if h.live.turn is not None:  # a runtime asks within a turn
        h.runtime({"type": "question_requested", "requestId": request_id, "questions": []})


def _attached(h: Harness, running: str | None, reconnected: bool) -> None:
    if h.live.status in (S.READY, S.RUNNING, S.WAITING):
        named = {None: None, "current": h.current, "adopt": f"trn_adopted_{h.now}"}[running]
        h.live.runtime_attached(named, reconnected)


def with_turn(event: dict[str, Any], turn_id: str | None) -> dict[str, Any]:
    if turn_id is not None:
        event["turnId"] = turn_id
    return event


STEPS: dict[str, Callable[..., None]] = {
    "start": Harness.start,
    "delta": _delta,
    "wait": Harness.advance,
    "question": _question,
    "resolved": lambda h, rid: h.runtime({"type": "approval_resolved", "requestId": rid}),
    "usage": lambda h, n: h.runtime({"type": "usage_update", "inputTokens": n, "outputTokens": 1}),
    "tool": lambda h: h.runtime({"type": "tool_call_started", "toolCallId": "c", "toolName": "t"}),
    "runtime_started": lambda h: h.runtime({"type": "turn_started"}),
    "end": lambda h, kind, which: h.runtime(with_turn({"type": kind}, h.turn_id(which))),
    "lost": lambda h: h.live.end_turn_with_error(ErrorCode.UPSTREAM_UNAVAILABLE, "lost", S.ERROR),
    "attached": _attached,
}


def check_stream(h: Harness) -> None:
    frames = h.recorder.frames
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1)), "seq not contiguous"
    assert h.count.n == len(frames)
    assert h.recorder.held_at == [], f"text held while {h.recorder.held_at} went out"
    ends: dict[str, int] = {}
    started: list[str] = []
    open_turn: str | None = None
    for frame in frames:
        kind, turn_id = frame["type"], frame.get("turnId")
        if kind == "turn_started":
            started.append(turn_id)
            open_turn = turn_id
        elif kind in ("turn_complete", "turn_error"):
            closes = turn_id if turn_id is not None else open_turn
            if closes is not None:
                ends[closes] = ends.get(closes, 0) + 1
            if closes == open_turn:
                open_turn = None
        elif kind == "text_delta" and turn_id in started:
            assert ends.get(turn_id, 0) == 0, f"a delta of {turn_id} after its end"
    for turn_id in started:
        expected = 0 if turn_id == h.current else 1
        assert ends.get(turn_id, 0) == expected, f"{turn_id}: {ends.get(turn_id, 0)} ends"
    states = [f for f in frames if f["type"] == "session_state"]
    for before, after in itertools.pairwise(states):
        assert after["previous"] == before["state"]


def check_text(h: Harness) -> None:
    """Each gateway turn's deltas concatenate to exactly the text fed while it was current."""
    published: dict[str, list[str]] = {}
    for frame in h.recorder.frames:
        if frame["type"] == "text_delta" and "turnId" in frame:
            published.setdefault(frame["turnId"], []).append(frame["text"])
    for turn_id, fed in h.fed_text.items():
        if turn_id != h.current:
            assert "".join(published.get(turn_id, [])) == "".join(fed)


@settings(max_examples=300, deadline=None)
@given(st.lists(ACTIONS, max_size=40), st.sampled_from(["deactivate", "delete"]))
def test_random_runtime_sequences_keep_the_stream_invariants(actions, ending) -> None:
    h = Harness()
    for action in actions:
        STEPS[action[0]](h, *action[1:])
        check_stream(h)
    getattr(h, ending)()
    assert h.live.deadline is None, "a deadline left after " + ending
    check_stream(h)
    check_text(h)


# ----- one rule each ----------------------------------------------------------------------------


def running() -> Harness:
    h = Harness()
    h.start()
    return h


def types(h: Harness) -> list[str]:
    return [f["type"] for f in h.recorder.frames]


def test_a_turn_starts_running_then_announces_itself() -> None:
    h = running()
    assert types(h)[-2:] == ["session_state", "turn_started"]
    assert h.recorder.frames[-1]["turnId"] == "trn_1"
    assert h.live.status == S.RUNNING


def test_held_text_goes_out_before_a_state_change() -> None:
    """Before the fix: `_publish_state` did not flush, so a state change published by
    activation or deactivation could overtake text still held by the coalescer."""
    h = running()
    h.runtime({"type": "text_delta", "turnId": "trn_1", "text": "a"})
    h.runtime({"type": "text_delta", "turnId": "trn_1", "text": "b"})  # inside the window: held
    assert h.live.deadline is not None
    h.deactivate()
    assert types(h)[-4:] == ["text_delta", "text_delta", "session_state", "session_state"]
    assert h.recorder.frames[-3]["text"] == "b"
    assert h.live.deadline is None


def test_delete_leaves_no_deadline() -> None:
    h = running()
    h.runtime({"type": "text_delta", "turnId": "trn_1", "text": "a"})
    h.runtime({"type": "text_delta", "turnId": "trn_1", "text": "b"})
    h.delete()
    assert h.live.deadline is None
    assert types(h)[-2:] == ["text_delta", "session_state"]


def test_held_text_leaves_at_its_deadline() -> None:
    h = running()
    h.runtime({"type": "text_delta", "turnId": "trn_1", "text": "a"})
    deadline = h.live.receive({"type": "text_delta", "turnId": "trn_1", "text": "b"}, h.now)
    assert deadline == h.now + WINDOW
    assert h.live.tick(h.now) == deadline  # not yet due: nothing leaves, still held
    assert types(h)[-1] == "text_delta" and h.recorder.frames[-1]["text"] == "a"
    assert h.live.tick(deadline) is None
    assert h.recorder.frames[-1]["text"] == "b"


def test_a_question_waits_and_its_answer_resumes() -> None:
    h = running()
    h.runtime({"type": "permission_requested", "requestId": "r1"})
    assert h.live.status == S.WAITING and "r1" in h.live.pending
    h.runtime({"type": "approval_resolved", "requestId": "r1"})
    assert h.live.status == S.RUNNING and not h.live.pending


def test_a_completed_turn_adds_its_usage_and_settles_ready() -> None:
    h = running()
    h.runtime({"type": "usage_update", "inputTokens": 2, "outputTokens": 3})
    h.runtime(
        {"type": "turn_complete", "turnId": "trn_1", "usage": {"inputTokens": 5, "outputTokens": 7}}
    )
    assert (h.live.usage.input, h.live.usage.output) == (7, 10)
    assert h.live.status == S.READY and h.live.turn is None and h.turn_ends == 1


def test_a_turn_ending_while_waiting_passes_through_running() -> None:
    h = running()
    h.runtime({"type": "question_requested", "requestId": "r1"})
    h.runtime({"type": "turn_complete", "turnId": "trn_1"})
    frames = h.recorder.frames
    states = [(f["previous"], f["state"]) for f in frames if f["type"] == "session_state"]
    assert states[-2:] == [("waiting", "running"), ("running", "ready")]
    assert not h.live.pending


def test_an_end_about_another_turn_is_forwarded_and_ends_nothing() -> None:
    h = running()
    h.runtime({"type": "turn_error", "turnId": "trn_other", "code": "UPSTREAM_ERROR"})
    assert types(h)[-1] == "turn_error" and h.live.turn is not None


def test_late_deltas_and_second_ends_of_an_ended_turn_are_dropped() -> None:
    h = running()
    h.runtime({"type": "turn_complete", "turnId": "trn_1"})
    published = len(h.recorder.frames)
    h.runtime({"type": "text_delta", "turnId": "trn_1", "text": "late"})
    h.runtime({"type": "turn_complete", "turnId": "trn_1"})
    assert len(h.recorder.frames) == published


def test_the_runtime_turn_started_is_dropped() -> None:
    h = running()
    published = len(h.recorder.frames)
    h.runtime({"type": "turn_started", "turnId": "trn_1"})
    assert len(h.recorder.frames) == published


def test_ending_a_turn_with_an_error_flushes_then_reports() -> None:
    h = running()
    h.runtime({"type": "text_delta", "turnId": "trn_1", "text": "a"})
    h.runtime({"type": "text_delta", "turnId": "trn_1", "text": "b"})
    h.live.end_turn_with_error(ErrorCode.UPSTREAM_UNAVAILABLE, "gone", S.ERROR)
    assert types(h)[-3:] == ["text_delta", "turn_error", "session_state"]
    assert h.recorder.frames[-2]["code"] == "UPSTREAM_UNAVAILABLE"
    assert h.live.status == S.ERROR and h.turn_ends == 1


def test_an_unknown_running_turn_is_adopted_when_ready() -> None:
    h = Harness()
    h.activate()
    h.live.runtime_attached("trn_x", reconnected=False)
    assert h.current == "trn_x" and h.live.status == S.RUNNING
    assert h.recorder.frames[-1]["reason"] == "turn in progress"


def test_a_running_turn_named_while_activating_shows_as_running_once_activated() -> None:
    """The hello comes while the runtime socket opens (before `ready`): nothing is published
    then, and `activated` moves through `ready` to `running` in one step — a `run_turn` can
    never find the session ready while its runtime runs a turn."""
    h = Harness()
    h.live.set_status(S.ACTIVATING)
    published = len(h.recorder.frames)
    h.live.runtime_attached("trn_x", reconnected=False)
    assert len(h.recorder.frames) == published and h.live.status == S.ACTIVATING
    h.live.activated()
    states = [(f["previous"], f["state"]) for f in h.recorder.frames[published:]]
    assert states == [("activating", "ready"), ("ready", "running")]
    assert h.current == "trn_x" and h.recorder.frames[-1]["reason"] == "turn in progress"


def test_an_idle_runtime_named_while_activating_leaves_the_session_ready() -> None:
    h = Harness()
    h.live.set_status(S.ACTIVATING)
    h.live.runtime_attached(None, reconnected=False)
    h.live.activated()
    assert h.live.status == S.READY and h.live.turn is None


def test_a_turn_missing_after_a_reconnect_is_lost() -> None:
    h = running()
    h.live.runtime_attached(None, reconnected=True)
    assert types(h)[-2:] == ["turn_error", "session_state"]
    assert h.live.status == S.READY and h.live.turn is None


def test_a_turn_still_running_after_a_reconnect_goes_on() -> None:
    h = running()
    h.live.runtime_attached("trn_1", reconnected=True)
    assert h.current == "trn_1" and types(h)[-1] == "turn_started"


def test_an_illegal_transition_is_logged_and_taken() -> None:
    h = Harness()
    h.live.set_status(S.RUNNING)  # inactive → running is not in the table
    assert h.live.status == S.RUNNING
    assert h.recorder.frames[-1]["previous"] == "inactive"


@pytest.mark.parametrize("end", ["deactivate", "delete"])
def test_deactivate_and_delete_cancel_the_delta_timer(end: str) -> None:
    """Before the fix: neither `deactivate` nor `delete_session` cancelled `delta_timer`, so
    held text was published after the session's last state (or into a deleted session)."""

    async def scenario() -> list[dict[str, Any]]:
        records = RecordStore(None)  # type: ignore[arg-type]  # nothing is written in this test
        activation = Activator(
            podium=None,  # type: ignore[arg-type]  # no runtime socket is opened
            persister=Persister(records),
            limits=Limits(10, 10),
            idle_timeout_s=60,
            replay_max_events=100,
            replay_max_bytes=1 << 20,
            replay_budget=ReplayBudget(1 << 24),
        )
        record = SessionRecord(
            id="ses_1",
            tenant_id="t",
            owner_id="u",
            agent_type="a",
            created_at=0,
            updated_at=0,
            last_activity_at=0,
        )
        active = activation.hold(record, 1)
        recorder = Recorder(active.live)
        active.stream.attach(recorder)
        active.live.set_status(S.ACTIVATING)
        active.live.set_status(S.READY)
        active.live.start_turn(Turn("trn_1", "hi", 0))
        for text in ("a", "b"):
            content = {"turn_id": "trn_1", "text": text}
            active.driver._on_runtime_frame({"event_type": "update", "content": content})
        assert active.driver._timer is not None, "the second delta is held"
        if end == "deactivate":
            await activation.deactivate(active, "idle")
        else:
            await activation.forget("ses_1")
        assert active.driver._timer is None and active.live.deadline is None
        assert "ses_1" not in activation.active
        return recorder.frames

    frames = asyncio.run(scenario())
    kinds = [f["type"] for f in frames]
    last_text = max(i for i, kind in enumerate(kinds) if kind == "text_delta")
    assert set(kinds[last_text + 1 :]) == {"session_state"}, "the text went out before the end"
    assert "".join(f["text"] for f in frames if f["type"] == "text_delta") == "ab"
