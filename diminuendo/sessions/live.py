"""LiveSession: the live half of one active session, sans-I/O in the manner of h11 and websockets.

It holds the session's status, its current turn, the questions waiting for an answer, the token
usage and the text deltas held for coalescing (`coalesce.py`). It takes runtime events and the
driver's commands (start a turn, change status, end the turn with an error, the runtime attached)
with the time `now` (the event loop's clock, in seconds), publishes the frames they produce on the
session's `SessionStream` and answers its next deadline: when the driver must call `tick`, or
`None` when nothing is held. No asyncio, no sockets, no Sanic: `tests/unit/test_live_session.py`
drives it with a fake clock.

Choices:

- **Runtime events come in mapped** (`mapping.map_event`): the turn state machine speaks the
  client protocol (PROTOCOL.md §6), which is what its rules are stated in; the runtime's names and
  aliases stay in the one mapping table, and the driver logs the unknown ones.
- **Frames go out on the stream, not in a returned list**: `SessionStream` is itself sans-I/O
  (it assigns `seq`, encodes once, retains and fans out), and a list per runtime event would cost
  the hot path an allocation and a second loop per frame.
- **Runtime events stay the dicts `mapping.py` made** (the hot path: no struct per text delta);
  the frames the session makes itself (`session_state`, `turn_started`, `turn_error`) are
  `protocol.events` structs.

Rules that hold by construction:

- **One emit choke point.** Every frame but a text delta leaves through `_emit`, which publishes
  the held text first: the stream keeps runtime order whoever asks for the frame (a runtime event,
  a status change of activation or deactivation, a turn's error).
- **Nothing of an ended turn leaves after its end**: a turn's end publishes its held text first,
  and a late delta or a second end naming a turn that already ended is dropped (a client has closed
  that turn, and its deltas must still concatenate to its `finalText`).
- **A turn's end settles the session**: `on_turn_end` asks its holder to write the record
  (`activation.py` wires it to the background `Persister`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from diminuendo.protocol.errors import ErrorCode
from diminuendo.protocol.events import SessionEvent, SessionState, TurnError, TurnStarted
from diminuendo.protocol.models import TokenUsage
from diminuendo.sessions.coalesce import DeltaCoalescer
from diminuendo.sessions.state import IllegalTransition, SessionStatus, transition
from diminuendo.sessions.stream import SessionStream

__all__ = ["BUSY", "LiveSession", "PublishCount", "Turn", "now_ms"]

BUSY = (SessionStatus.RUNNING, SessionStatus.WAITING)
# Where the runtime's hello may adopt a turn this process did not start: while the runtime
# socket opens (`activated` shows it) and once ready.
ADOPTING = (SessionStatus.ACTIVATING, SessionStatus.READY)
_QUESTIONS = ("question_requested", "permission_requested")
_TURN_ENDS = ("turn_complete", "turn_error")


def now_ms() -> int:
    """Wall-clock milliseconds: the `ts` of a frame and the record's timestamps."""
    return int(time.time() * 1000)


@dataclass
class Turn:
    turn_id: str
    text: str
    started_at: int
    client_turn_id: str | None = None
    output: list[str] = field(default_factory=list)


class PublishCount:
    """Frames published by every session of the process (the `eventsOut` figure), shared."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class LiveSession:
    __slots__ = (
        "_count",
        "_deltas",
        "_ended",
        "_on_turn_end",
        "_wall_ms",
        "last_activity_at",
        "pending",
        "status",
        "stream",
        "turn",
        "usage",
    )

    def __init__(
        self,
        stream: SessionStream,
        *,
        usage: TokenUsage | None = None,
        last_activity_at: int = 0,
        count: PublishCount | None = None,
        on_turn_end: Callable[[], None] = lambda: None,
        wall_ms: Callable[[], int] = now_ms,
        deltas: DeltaCoalescer | None = None,
    ) -> None:
        self.stream = stream
        self.status = SessionStatus.INACTIVE
        self.turn: Turn | None = None
        self.pending: dict[str, dict[str, Any]] = {}
        self.usage = usage or TokenUsage()
        self.last_activity_at = last_activity_at
        self._count = count or PublishCount()
        self._on_turn_end = on_turn_end
        self._wall_ms = wall_ms
        self._deltas = deltas or DeltaCoalescer()
        self._ended: str | None = None  # the id of the turn that ended last

    def __repr__(self) -> str:
        return f"LiveSession({self.stream.session_id}, {self.status.value})"

    @property
    def busy(self) -> bool:
        return self.status in BUSY

    @property
    def deadline(self) -> float | None:
        """When `tick` is due (held text), or None when nothing is held."""
        deltas = self._deltas
        return deltas.deadline if deltas.pending else None

    # ----- events from the runtime ------------------------------------------------------------

    def receive(self, event: dict[str, Any], now: float) -> float | None:
        """Hot path: one mapped runtime event → the frames it makes; returns `deadline`."""
        kind = event["type"]
        if kind == "text_delta":
            return self._text(event, now)
        if kind == "turn_started":
            return self.deadline  # the gateway announced the turn when it accepted it
        if kind in _QUESTIONS:
            self.pending[event.get("requestId", "")] = event
            self._emit(event)
            self.set_status(SessionStatus.WAITING)
        elif kind == "approval_resolved":
            self.pending.pop(event.get("requestId", ""), None)
            self._emit(event)
            if not self.pending and self.status == SessionStatus.WAITING:
                self.set_status(SessionStatus.RUNNING)
        elif kind in _TURN_ENDS:
            return self._turn_end(kind, event)
        else:
            if kind == "usage_update":
                self._add_usage(event.get("inputTokens"), event.get("outputTokens"))
            self._emit(event)
        return None  # `_emit` left nothing held

    def tick(self, now: float) -> float | None:
        """The deadline passed: publish the held text if its window has closed."""
        merged = self._deltas.due(now)
        if merged is not None:
            self._publish(merged)
        return self.deadline

    def _text(self, event: dict[str, Any], now: float) -> float | None:
        deltas = self._deltas
        if self._ended is None or event.get("turnId") != self._ended:
            if self.turn is not None:
                self.turn.output.append(event.get("text", ""))
            for ready in deltas.push(event, now):
                self._publish(ready)
        return deltas.deadline if deltas.pending else None

    def _turn_end(self, kind: str, event: dict[str, Any]) -> float | None:
        turn = self.turn
        named = event.get("turnId")
        if named is not None and named == self._ended:
            return self.deadline  # that turn has ended already: dropped
        if turn is not None and named not in (None, turn.turn_id):
            self._emit(event)  # about a turn we never accepted
            return None
        if kind == "turn_complete" and event.get("usage"):
            usage = event["usage"]
            self._add_usage(usage.get("inputTokens"), usage.get("outputTokens"))
        self._emit(event)
        if turn is not None:
            self._finish_turn(SessionStatus.READY)
        return None

    def _add_usage(self, inputs: Any, outputs: Any) -> None:
        usage = self.usage
        self.usage = TokenUsage(
            input=usage.input + (inputs if isinstance(inputs, int) else 0),
            output=usage.output + (outputs if isinstance(outputs, int) else 0),
        )

    # ----- commands from the driver -----------------------------------------------------------

    def set_status(self, status: SessionStatus, reason: str | None = None) -> None:
        """Move to `status` and publish `session_state` (nothing when it is the current one)."""
        previous = self.status
        if previous == status:
            return
        try:
            self.status = transition(previous, status)
        except IllegalTransition:
            # A bug, never a crash: log it and keep the session usable in the requested state.
            logger.error("illegal session transition {} → {}", previous, status)
            self.status = status
        self._emit(SessionState(state=status.value, previous=previous.value, reason=reason or None))

    def start_turn(self, turn: Turn) -> None:
        """The gateway accepted `turn`: `running`, then `turn_started`."""
        self.turn = turn
        self.set_status(SessionStatus.RUNNING)
        self._emit(TurnStarted(turn_id=turn.turn_id, client_turn_id=turn.client_turn_id))
        self.last_activity_at = turn.started_at

    def end_turn_with_error(self, code: ErrorCode, message: str, status: SessionStatus) -> None:
        """The turn cannot finish (runtime lost, a send failed): `turn_error`, then `status`."""
        self._flush()
        if self.turn is not None:
            self._emit(TurnError(turn_id=self.turn.turn_id, code=code.value, message=message))
        self._finish_turn(status)

    def runtime_attached(self, running_turn_id: str | None, reconnected: bool) -> None:
        """Podium's hello names the turn its runtime is running. A turn we do not know about
        (started before this gateway process, e.g. across a restart) is adopted, so it stays
        busy and can be stopped — while activating, silently, `activated` then shows it; after
        a reconnect, our turn missing from the runtime means Podium restarted and lost it: end
        it now rather than wait for events that never come."""
        turn = self.turn
        if turn is None:
            if running_turn_id is not None and self.status in ADOPTING:
                self.turn = Turn(running_turn_id, "", self._wall_ms())
                if self.status == SessionStatus.READY:
                    self.set_status(SessionStatus.RUNNING, "turn in progress")
        elif reconnected and running_turn_id != turn.turn_id:
            logger.warning(
                "session {}: runtime restarted, turn {} lost", self.stream.session_id, turn.turn_id
            )
            self.end_turn_with_error(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                "The agent runtime restarted and the turn was lost",
                SessionStatus.READY,
            )

    def activated(self) -> None:
        """The runtime socket is open (and its hello read): `ready`, then at once `running` if
        the hello named a turn this process did not start — in one step, so no `run_turn` can
        find the session ready while its runtime is busy."""
        self.set_status(SessionStatus.READY)
        if self.turn is not None:
            self.set_status(SessionStatus.RUNNING, "turn in progress")

    def _finish_turn(self, status: SessionStatus) -> None:
        if self.turn is not None:
            self._ended = self.turn.turn_id
        self.turn = None
        self.pending.clear()
        if self.status == SessionStatus.WAITING and status == SessionStatus.READY:
            self.set_status(SessionStatus.RUNNING)  # waiting → ready is not a move
        self.last_activity_at = self._wall_ms()
        self.set_status(status)
        self._on_turn_end()

    # ----- a copy of another instance's session (fleet mode) ---------------------------------

    def follow(self, kind: str, event: dict[str, Any]) -> None:
        """The owner published `event` (a state frame): this copy's state changes as the
        owner's did, and nothing is published (the frame already is in the stream)."""
        if kind == "session_state":
            with suppress(ValueError):
                self.status = SessionStatus(event.get("state"))
        elif kind == "turn_started":
            self.turn = Turn(
                event.get("turnId", ""), "", event.get("ts", 0), event.get("clientTurnId")
            )
            self._ended = None
        elif kind in _TURN_ENDS:
            if self.turn is not None and event.get("turnId") in (None, self.turn.turn_id):
                self._ended, self.turn = self.turn.turn_id, None
                self.pending.clear()
            if kind == "turn_complete" and event.get("usage"):
                usage = event["usage"]
                self._add_usage(usage.get("inputTokens"), usage.get("outputTokens"))
        elif kind in _QUESTIONS:
            self.pending[event.get("requestId", "")] = event
        elif kind == "approval_resolved":
            self.pending.pop(event.get("requestId", ""), None)

    # ----- the one way out --------------------------------------------------------------------

    def _emit(self, event: dict[str, Any] | SessionEvent) -> None:
        """Publish any event but a text delta: the held text first, so order is kept."""
        held = self._deltas.flush()
        if held is not None:
            self._publish(held)
        self._publish(event)

    def _flush(self) -> None:
        held = self._deltas.flush()
        if held is not None:
            self._publish(held)

    def _publish(self, event: dict[str, Any] | SessionEvent) -> None:
        self.stream.publish(event, self._wall_ms())
        self._count.n += 1
