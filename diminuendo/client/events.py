"""Decoding server → client frames into the structs of `diminuendo.protocol.events`.

Frames are decoded in one pass by one `msgspec` decoder over the tagged union of
`protocol.events` (the same structs the gateway encodes; `type` is the tag, fields are camelCase
on the wire and snake_case here). The client must keep working when the server grows: unknown
fields are ignored, and a frame whose `type` this version does not know — or whose fields do
not match this version's schema — becomes an `UnknownEvent` that keeps the raw object, so a
subscription never loses a `seq` to a decoding problem. Only input that is not a
JSON object with a string `type` is a `ProtocolError`.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from diminuendo.client.errors import ProtocolError
from diminuendo.protocol import events as wire
from diminuendo.protocol.events import (
    Ack,
    ApprovalResolved,
    Authenticated,
    AuthExpiring,
    Connected,
    ErrorEvent,
    FileChanged,
    FileContent,
    FileHistory,
    FileList,
    Heartbeat,
    History,
    MemberList,
    PermissionRequested,
    PlanCreated,
    PlanRevised,
    PlanStepCompleted,
    PlanStepStarted,
    Pong,
    QuestionRequested,
    SandboxInit,
    SandboxProvisioning,
    SandboxRemoved,
    ServerFrame,
    SessionArchived,
    SessionCreated,
    SessionDeleted,
    SessionEvent,
    SessionLeft,
    SessionList,
    SessionState,
    SessionUnarchived,
    SessionUpdated,
    StateSnapshot,
    TerminalComplete,
    TerminalStream,
    TextDelta,
    ThinkingComplete,
    ThinkingProgress,
    ThinkingStart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolError,
    ToolResult,
    TurnComplete,
    TurnError,
    TurnEvent,
    TurnStarted,
    UsageUpdate,
    Welcome,
)
from diminuendo.protocol.shapes import (
    CurrentTurn,
    FileEntry,
    FileIteration,
    HistoryMessage,
    HistoryToolCall,
    Identity,
    Member,
    Question,
    SessionMeta,
    TokenUsage,
    Usage,
)

__all__ = [
    "Ack",
    "ApprovalResolved",
    "AuthExpiring",
    "Authenticated",
    "Connected",
    "CurrentTurn",
    "ErrorEvent",
    "Event",
    "Events",
    "FileChanged",
    "FileContent",
    "FileEntry",
    "FileHistory",
    "FileIteration",
    "FileList",
    "Gap",
    "Heartbeat",
    "History",
    "HistoryMessage",
    "HistoryToolCall",
    "Identity",
    "Member",
    "MemberList",
    "PermissionRequested",
    "PlanCreated",
    "PlanRevised",
    "PlanStepCompleted",
    "PlanStepStarted",
    "Pong",
    "Question",
    "QuestionRequested",
    "SandboxInit",
    "SandboxProvisioning",
    "SandboxRemoved",
    "ServerFrame",
    "SessionArchived",
    "SessionCreated",
    "SessionDeleted",
    "SessionEvent",
    "SessionLeft",
    "SessionList",
    "SessionMeta",
    "SessionState",
    "SessionUnarchived",
    "SessionUpdated",
    "StateSnapshot",
    "TerminalComplete",
    "TerminalStream",
    "TextDelta",
    "ThinkingComplete",
    "ThinkingProgress",
    "ThinkingStart",
    "TokenUsage",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolError",
    "ToolResult",
    "TurnComplete",
    "TurnError",
    "TurnEvent",
    "TurnStarted",
    "UnknownEvent",
    "Usage",
    "UsageUpdate",
    "Welcome",
    "decode_event",
]


# ----- client-side markers --------------------------------------------------------------------


class UnknownEvent(msgspec.Struct, frozen=True):
    """A frame this client version cannot type: an event it has no struct for, or a known type
    whose fields do not match this version's schema. `data` is the raw object, so nothing is
    lost; `session_id`, `seq` and `id` are read from it so routing still works."""

    type: str
    data: dict[str, Any]

    @property
    def id(self) -> str | None:
        value = self.data.get("id")
        return value if isinstance(value, str) else None

    @property
    def session_id(self) -> str | None:
        value = self.data.get("sessionId")
        return value if isinstance(value, str) else None

    @property
    def seq(self) -> int | None:
        value = self.data.get("seq")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class Gap(msgspec.Struct, kw_only=True, frozen=True):
    """Yielded by a subscription when the server could not replay everything after the last
    event it yielded (the replay window moved on, or the session's epoch changed). Events after
    the gap follow live; what was missed is durable in `get_history`."""

    session_id: str
    epoch: str
    last_seq: int
    previous_epoch: str | None
    previous_seq: int | None
    snapshot: StateSnapshot


class Events(wire.Events, tag="events", kw_only=True):
    """The reply to `get_events` as the client sees it: each retained event decoded on its own
    (see `decode_event`), so one event this version cannot type does not spoil the whole page."""

    events: list[Event]  # type: ignore[assignment]


Event = Union[wire.AnyFrame, Events, UnknownEvent]  # noqa: UP007 - a union of unions
"""Whatever `decode_event` returns: a typed frame, or an `UnknownEvent`."""

_decoder = msgspec.json.Decoder(wire.AnyFrame)
_raw_decoder = msgspec.json.Decoder()


def decode_event(data: str | bytes) -> Event:
    """One text frame → its event. Raises `ProtocolError` only for input that is not a JSON
    object with a string `type`; everything else decodes (see `UnknownEvent`)."""
    try:
        event = _decoder.decode(data)
    except msgspec.ValidationError:
        return _unknown(data)
    except (msgspec.DecodeError, UnicodeEncodeError) as exc:  # (a str with lone surrogates)
        raise ProtocolError("frame is not valid JSON") from exc
    if isinstance(event, wire.Events):
        # Every field of the page as decoded (none is dropped if the schema grows), its events
        # decoded one by one.
        page = msgspec.structs.asdict(event)
        page["events"] = [decode_event(raw) for raw in event.events]
        return Events(**page)
    return event


def _unknown(data: str | bytes) -> UnknownEvent:
    try:
        raw = _raw_decoder.decode(data)
    except msgspec.DecodeError as exc:  # the typed pass failed before reaching the bad part
        raise ProtocolError("frame is not valid JSON") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ProtocolError("frame is not an object with a string `type`")
    return UnknownEvent(type=raw["type"], data=raw)
