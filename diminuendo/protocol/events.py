"""Every server → client frame of the protocol (PROTOCOL.md §3, §5, §6, §12) as a typed struct.

One schema for both ends: the gateway builds and encodes these structs (`encode_frame`), the
client library decodes them (`diminuendo.client.events.decode_event`), and the OpenAPI document
is generated from them. `type` is the tag; fields are camelCase on the wire, snake_case here.

Fields are declared in wire order, so a struct encodes to exactly the bytes the gateway sent
when it built frames as dicts: a field with no default is always on the wire (`null` included),
a field defaulting to `None` is left out while unset. `id` echoes the client message a frame
answers (§2) and is declared, last, only on the frames that answer one; the others report `None`.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _KeywordOnly(msgspec.structs.StructMeta):
    """msgspec does not inherit `kw_only`; every struct here is keyword-only, so optional base
    fields (`sessionId`, `seq`) may precede a subclass's required ones and keep their place."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any):
        kw.setdefault("kw_only", True)
        return super().__new__(mcls, name, bases, namespace, **kw)


class _Shape(msgspec.Struct, metaclass=_KeywordOnly, rename="camel", frozen=True):
    """Nested objects: camelCase on the wire, every field encoded, immutable once built."""


class ServerFrame(_Shape, tag_field="type", omit_defaults=True):
    """A frame to the client; unset optional fields stay off the wire."""

    @property
    def type(self) -> str:
        """The wire `type`, as on the client's `UnknownEvent`, so any event matches by name."""
        return self.__struct_config__.tag  # type: ignore[return-value]

    @property
    def id(self) -> str | None:
        """The request this frame answers: frames that answer one declare `id` as a field."""
        return None


# ----- nested shapes --------------------------------------------------------------------------


class Identity(_Shape):
    """The `identity` of `authenticated` (§3); `email` is `null` when the token has none."""

    user_id: str
    email: str | None
    tenant_id: str
    role: str


class TokenUsage(_Shape):
    input: int = 0
    output: int = 0


class SessionMeta(_Shape):
    """A session (§4). Times are Unix ms."""

    id: str
    tenant_id: str
    owner_id: str
    agent_type: str
    name: str | None = None
    project_id: str | None = None
    status: str = "inactive"
    archived: bool = False
    created_at: int
    updated_at: int
    last_activity_at: int
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


class HistoryMessage(_Shape, omit_defaults=True):
    """`truncated`: the message alone was larger than a reply, so `text` is cut (and
    `tool_calls` may be left out); the durable transcript keeps it whole."""

    id: str
    role: str
    text: str
    turn_id: str | None
    ts: int | None
    tool_calls: list[HistoryToolCall] | None = None
    truncated: bool | None = None


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
    id: str | None = None


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
    id: str | None = None


class Ack(ServerFrame, tag="ack"):
    for_: str = msgspec.field(name="for")
    id: str | None = None


class ErrorEvent(ServerFrame, tag="error"):
    """An `error` frame (§12). `code` is stable API; `message` is safe to show a user."""

    code: str
    message: str
    id: str | None = None
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
    id: str | None = None


class SessionUpdated(ServerFrame, tag="session_updated"):
    session: SessionMeta
    id: str | None = None


class SessionArchived(SessionEvent, tag="session_archived"):
    id: str | None = None


class SessionUnarchived(SessionEvent, tag="session_unarchived"):
    id: str | None = None


class SessionDeleted(SessionEvent, tag="session_deleted"):
    id: str | None = None


class SessionLeft(SessionEvent, tag="session_left"):
    id: str | None = None


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
    pending: list[QuestionRequested | PermissionRequested]
    current_turn: CurrentTurn | None = None
    id: str | None = None


# ----- turns, tools, interaction ---------------------------------------------------------------


class TurnStarted(TurnEvent, tag="turn_started"):
    client_turn_id: str | None = None
    id: str | None = None


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
    is_error: bool


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
    id: str | None = None


class History(SessionEvent, tag="history"):
    messages: list[HistoryMessage]
    has_more: bool
    id: str | None = None


class Events(SessionEvent, tag="events"):
    """The reply to `get_events`: retained events after `afterSeq`, in seq order, spliced in as
    they were encoded for the stream. `has_more`: the reply stopped early (count or bytes), ask
    again from the last event's seq."""

    epoch: str
    events: list[msgspec.Raw]
    last_seq: int
    gap: bool
    has_more: bool
    id: str | None = None


class FileList(SessionEvent, tag="file_list"):
    path: str
    entries: list[FileEntry]
    id: str | None = None


class FileContent(SessionEvent, tag="file_content"):
    """`encoding` is `utf-8` or `base64`; `iteration` is set for `file_at_iteration`."""

    path: str
    content: str
    encoding: str
    size: int
    iteration: int | None = None
    id: str | None = None


class FileHistory(SessionEvent, tag="file_history"):
    path: str
    iterations: list[FileIteration]
    id: str | None = None


class MemberList(ServerFrame, tag="member_list"):
    members: list[Member]
    id: str | None = None


AnyFrame = (
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
)
"""Every frame the server sends, as one tagged union (the client decodes with it)."""
