"""Every server → client frame of the protocol (PROTOCOL.md §3, §5, §6, §12) as a typed struct.

Frames are decoded in one pass by one `msgspec` decoder over a tagged union (`type` is the tag,
fields are camelCase on the wire and snake_case here). The client must keep working when the
server grows: unknown fields are ignored, and a frame whose `type` this version does not know —
or whose fields do not match this version's schema — becomes an `UnknownEvent` that keeps the raw
object, so a subscription never loses a `seq` to a decoding problem. Only input that is not a
JSON object with a string `type` is a `ProtocolError`.
"""

from __future__ import annotations

from typing import Any, Union, get_args

import msgspec

from diminuendo.client.errors import ProtocolError

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


class _KeywordOnly(msgspec.structs.StructMeta):
    """msgspec does not inherit `kw_only`; every struct here is keyword-only, so optional base
    fields (`id`, `seq`) may precede a subclass's required ones."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any):
        kw.setdefault("kw_only", True)
        return super().__new__(mcls, name, bases, namespace, **kw)


class _Shape(msgspec.Struct, metaclass=_KeywordOnly, rename="camel", frozen=True):
    """Nested objects: camelCase on the wire, immutable once decoded."""


class ServerFrame(_Shape, tag_field="type"):
    """Every frame may echo the `id` of the client message it answers (§2)."""

    id: str | None = None

    @property
    def type(self) -> str:
        """The wire `type`, as on `UnknownEvent`, so any event can be matched by name."""
        return self.__struct_config__.tag  # type: ignore[return-value]


# ----- nested shapes --------------------------------------------------------------------------


class Identity(_Shape):
    user_id: str
    tenant_id: str
    role: str
    email: str | None = None


class TokenUsage(_Shape):
    input: int = 0
    output: int = 0


class SessionMeta(_Shape):
    """A session (§4). Times are Unix ms."""

    id: str
    tenant_id: str
    owner_id: str
    agent_type: str
    status: str
    created_at: int
    updated_at: int
    last_activity_at: int
    name: str | None = None
    project_id: str | None = None
    archived: bool = False
    epoch: str = ""
    last_seq: int = 0
    token_usage: TokenUsage = TokenUsage()
    metadata: dict[str, Any] | None = None


class CurrentTurn(_Shape):
    """The running turn in a `state_snapshot`, with the text streamed so far."""

    turn_id: str
    text: str
    started_at: int


class Question(_Shape):
    id: str
    text: str
    options: list[Any] | None = None


class Usage(_Shape):
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None


class HistoryToolCall(_Shape):
    tool_call_id: str | None = None
    tool_name: str | None = None
    args: Any = None
    output: Any = None


class HistoryMessage(_Shape):
    id: str
    role: str
    text: str
    turn_id: str | None = None
    ts: int | None = None
    tool_calls: list[HistoryToolCall] | None = None


class FileEntry(_Shape):
    path: str
    type: str
    size: int | None = None
    modified_at: int | None = None


class FileIteration(_Shape):
    iteration: int
    timestamp: int
    size: int
    hash: str


class Member(_Shape):
    user_id: str
    role: str


# ----- connection -----------------------------------------------------------------------------


class Welcome(ServerFrame, tag="welcome"):
    protocol_version: int
    requires_auth: bool
    server_version: str | None = None


class Connected(ServerFrame, tag="connected"):
    client_id: str
    heartbeat_interval_ms: int
    ts: int | None = None


class Authenticated(ServerFrame, tag="authenticated"):
    identity: Identity


class AuthExpiring(ServerFrame, tag="auth_expiring"):
    """The connection's token expires at `expires_at` (epoch milliseconds): send `authenticate`
    with a fresh token of the same user before then, or the socket is closed with 4003 once
    the server's clock leeway has passed too."""

    expires_at: int


class Heartbeat(ServerFrame, tag="heartbeat"):
    ts: int


class Pong(ServerFrame, tag="pong"):
    server_ts: int
    ts: int | float | None = None


class Ack(ServerFrame, tag="ack"):
    for_: str = msgspec.field(name="for")


class ErrorEvent(ServerFrame, tag="error"):
    """An `error` frame (§12). `code` is stable API; `message` is safe to show a user."""

    code: str
    message: str
    session_id: str | None = None
    retry_after_ms: int | None = None
    details: Any = None
    supported: list[int] | None = None


# ----- sessions -------------------------------------------------------------------------------


class SessionEvent(ServerFrame):
    """A frame about one session. `seq` and `ts` are set on every event of the session's stream
    (everything a subscription yields); they are absent on direct replies outside the stream and
    on the requests listed in `StateSnapshot.pending`, which carry no `sessionId` either."""

    session_id: str | None = None
    seq: int | None = None
    ts: int | None = None


class SessionCreated(ServerFrame, tag="session_created"):
    session: SessionMeta


class SessionUpdated(ServerFrame, tag="session_updated"):
    session: SessionMeta


class SessionArchived(SessionEvent, tag="session_archived"):
    pass


class SessionUnarchived(SessionEvent, tag="session_unarchived"):
    pass


class SessionDeleted(SessionEvent, tag="session_deleted"):
    pass


class SessionLeft(SessionEvent, tag="session_left"):
    pass


class SessionState(SessionEvent, tag="session_state"):
    state: str
    previous: str
    reason: str | None = None


class TurnEvent(SessionEvent):
    """An event inside a turn: it names the turn."""

    turn_id: str | None = None


class QuestionRequested(TurnEvent, tag="question_requested"):
    request_id: str
    questions: list[Question]


class PermissionRequested(TurnEvent, tag="permission_requested"):
    request_id: str
    tool_name: str
    description: str
    options: list[Any] | None = None


class StateSnapshot(SessionEvent, tag="state_snapshot"):
    """The reply to `join_session`: the session now, and where its stream stands. `gap` means
    events after the requested `afterSeq` are gone (rebuild from `get_history`)."""

    session: SessionMeta
    epoch: str
    last_seq: int
    gap: bool
    current_turn: CurrentTurn | None = None
    pending: list[QuestionRequested | PermissionRequested] = []


# ----- turns, tools, interaction ---------------------------------------------------------------


class TurnStarted(TurnEvent, tag="turn_started"):
    client_turn_id: str | None = None


class TextDelta(TurnEvent, tag="text_delta"):
    text: str


class TurnComplete(TurnEvent, tag="turn_complete"):
    final_text: str
    stop_reason: str
    usage: Usage | None = None


class TurnError(TurnEvent, tag="turn_error"):
    code: str
    message: str


class ToolCallStart(TurnEvent, tag="tool_call_start"):
    tool_call_id: str
    tool_name: str


class ToolCallDelta(TurnEvent, tag="tool_call_delta"):
    tool_call_id: str
    args_delta: str


class ToolCall(TurnEvent, tag="tool_call"):
    tool_call_id: str
    tool_name: str
    args: Any


class ToolResult(TurnEvent, tag="tool_result"):
    tool_call_id: str
    output: Any
    is_error: bool = False


class ToolError(TurnEvent, tag="tool_error"):
    tool_call_id: str
    message: str


class ApprovalResolved(TurnEvent, tag="approval_resolved"):
    request_id: str
    approved: bool | None = None
    answers: dict[str, Any] | None = None
    dismissed: bool | None = None


class ThinkingStart(TurnEvent, tag="thinking.start"):
    pass


class ThinkingProgress(TurnEvent, tag="thinking.progress"):
    text: str


class ThinkingComplete(TurnEvent, tag="thinking.complete"):
    pass


class TerminalStream(TurnEvent, tag="terminal.stream"):
    data: str
    terminal_id: str | None = None


class TerminalComplete(TurnEvent, tag="terminal.complete"):
    exit_code: int
    terminal_id: str | None = None


class SandboxProvisioning(TurnEvent, tag="sandbox.provisioning"):
    pass


class SandboxInit(TurnEvent, tag="sandbox.init"):
    pass


class SandboxRemoved(TurnEvent, tag="sandbox.removed"):
    pass


class PlanCreated(TurnEvent, tag="plan.created"):
    steps: list[Any]


class PlanStepStarted(TurnEvent, tag="plan.step_started"):
    step_id: str


class PlanStepCompleted(TurnEvent, tag="plan.step_completed"):
    step_id: str


class PlanRevised(TurnEvent, tag="plan.revised"):
    steps: list[Any]


class FileChanged(TurnEvent, tag="file_changed"):
    path: str
    iteration: int | None = None


class UsageUpdate(TurnEvent, tag="usage_update"):
    input_tokens: int
    output_tokens: int
    cost: float | None = None


# ----- replies to reads -----------------------------------------------------------------------


class SessionList(ServerFrame, tag="session_list"):
    sessions: list[SessionMeta]


class History(SessionEvent, tag="history"):
    messages: list[HistoryMessage]
    has_more: bool = False


class _EventsBase(SessionEvent):
    epoch: str
    last_seq: int
    gap: bool


class _EventsFrame(_EventsBase, tag="events"):
    """`events` as it arrives: each retained event is decoded on its own afterwards, so one
    event this version cannot type does not spoil the whole page."""

    events: list[msgspec.Raw]


class Events(_EventsBase, tag="events"):
    """The reply to `get_events`: retained events after `afterSeq`, in seq order. A last event
    below `last_seq` means there is more to fetch."""

    events: list[Event]


class FileList(SessionEvent, tag="file_list"):
    path: str
    entries: list[FileEntry]


class FileContent(SessionEvent, tag="file_content"):
    """`encoding` is `utf-8` or `base64`; `iteration` is set for `file_at_iteration`."""

    path: str
    content: str
    encoding: str = "utf-8"
    size: int = 0
    iteration: int | None = None


class FileHistory(SessionEvent, tag="file_history"):
    path: str
    iterations: list[FileIteration]


class MemberList(ServerFrame, tag="member_list"):
    members: list[Member]


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


Event = (
    Welcome
    | Connected
    | Authenticated
    | AuthExpiring
    | Heartbeat
    | Pong
    | Ack
    | ErrorEvent
    | SessionCreated
    | SessionUpdated
    | SessionArchived
    | SessionUnarchived
    | SessionDeleted
    | SessionLeft
    | SessionState
    | StateSnapshot
    | TurnStarted
    | TextDelta
    | TurnComplete
    | TurnError
    | ToolCallStart
    | ToolCallDelta
    | ToolCall
    | ToolResult
    | ToolError
    | QuestionRequested
    | PermissionRequested
    | ApprovalResolved
    | ThinkingStart
    | ThinkingProgress
    | ThinkingComplete
    | TerminalStream
    | TerminalComplete
    | SandboxProvisioning
    | SandboxInit
    | SandboxRemoved
    | PlanCreated
    | PlanStepStarted
    | PlanStepCompleted
    | PlanRevised
    | FileChanged
    | UsageUpdate
    | SessionList
    | History
    | Events
    | FileList
    | FileContent
    | FileHistory
    | MemberList
    | UnknownEvent
)

_WIRE_TYPES = tuple(
    _EventsFrame if kind is Events else kind for kind in get_args(Event) if kind is not UnknownEvent
)
_decoder = msgspec.json.Decoder(Union[_WIRE_TYPES])  # noqa: UP007 - built from a tuple
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
    if isinstance(event, _EventsFrame):
        return Events(
            id=event.id,
            session_id=event.session_id,
            epoch=event.epoch,
            last_seq=event.last_seq,
            gap=event.gap,
            events=[decode_event(raw) for raw in event.events],
        )
    return event


def _unknown(data: str | bytes) -> UnknownEvent:
    try:
        raw = _raw_decoder.decode(data)
    except msgspec.DecodeError as exc:  # the typed pass failed before reaching the bad part
        raise ProtocolError("frame is not valid JSON") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ProtocolError("frame is not an object with a string `type`")
    return UnknownEvent(type=raw["type"], data=raw)
