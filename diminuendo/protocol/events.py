"""Every server → client frame (PROTOCOL.md §3, §5, §6, §12) as a typed struct, which the gateway
encodes, the client decodes (`client.events`) and OpenAPI documents. `type` is the tag.

Fields are declared in wire order, so a struct encodes to exactly the bytes of the dict the
gateway used to build: a field defaulting to `None` is left out while unset, any other is always
sent (`always_sent`: a default for decoding only). `id` echoes the client message a frame
answers (§2): declared, last, only on frames that answer one; the others report `None`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from diminuendo.protocol.shapes import (
    CurrentTurn,
    FileEntry,
    FileIteration,
    HistoryMessage,
    Identity,
    Member,
    Question,
    SessionMeta,
    Usage,
    WireStruct,
    always_sent,
)


class ServerFrame(WireStruct, tag_field="type", omit_defaults=True, kw_only=True):
    """A frame to the client; unset optional fields stay off the wire."""

    @property
    def type(self) -> str:
        """The wire `type`, as on the client's `UnknownEvent`, so any event matches by name."""
        return self.__struct_config__.tag  # type: ignore[return-value]

    @property
    def id(self) -> str | None:
        """The request this frame answers: frames that answer one declare `id` as a field."""
        return None


# ----- connection -----------------------------------------------------------------------------


class Welcome(ServerFrame, tag="welcome", kw_only=True):
    protocol_version: int
    requires_auth: bool
    server_version: str | None = None


class Connected(ServerFrame, tag="connected", kw_only=True):
    client_id: str
    heartbeat_interval_ms: int
    ts: int | None = None


class Authenticated(ServerFrame, tag="authenticated", kw_only=True):
    identity: Identity
    id: str | None = None


class AuthExpiring(ServerFrame, tag="auth_expiring", kw_only=True):
    """The connection's token expires at `expires_at` (epoch milliseconds): send `authenticate`
    with a fresh token of the same user before then, or the socket is closed with 4003 once
    the server's clock leeway has passed too."""

    expires_at: int


class Heartbeat(ServerFrame, tag="heartbeat", kw_only=True):
    ts: int


class Pong(ServerFrame, tag="pong", kw_only=True):
    server_ts: int
    ts: int | float | None = None
    id: str | None = None


class Ack(ServerFrame, tag="ack", kw_only=True):
    for_: str = msgspec.field(name="for")
    id: str | None = None


class ErrorEvent(ServerFrame, tag="error", kw_only=True):
    """An `error` frame (§12). `code` is stable API; `message` is safe to show a user."""

    code: str
    message: str
    id: str | None = None
    session_id: str | None = None
    retry_after_ms: int | None = None
    details: Any = None
    supported: list[int] | None = None


# ----- sessions -------------------------------------------------------------------------------


class SessionEvent(ServerFrame, kw_only=True):
    """A frame about one session. `seq` and `ts` are set on every event of the session's stream
    (everything a subscription yields); they are absent on direct replies outside the stream and
    on the requests listed in `StateSnapshot.pending`, which carry no `sessionId` either."""

    session_id: str | None = None
    seq: int | None = None
    ts: int | None = None


class SessionCreated(ServerFrame, tag="session_created", kw_only=True):
    session: SessionMeta
    id: str | None = None


class SessionUpdated(ServerFrame, tag="session_updated", kw_only=True):
    session: SessionMeta
    id: str | None = None


class SessionArchived(SessionEvent, tag="session_archived", kw_only=True):
    id: str | None = None


class SessionUnarchived(SessionEvent, tag="session_unarchived", kw_only=True):
    id: str | None = None


class SessionDeleted(SessionEvent, tag="session_deleted", kw_only=True):
    id: str | None = None


class SessionLeft(SessionEvent, tag="session_left", kw_only=True):
    id: str | None = None


class SessionState(SessionEvent, tag="session_state", kw_only=True):
    state: str
    previous: str
    reason: str | None = None


class TurnEvent(SessionEvent, kw_only=True):
    """An event inside a turn: it names the turn."""

    turn_id: str | None = None


class QuestionRequested(TurnEvent, tag="question_requested", kw_only=True):
    request_id: str
    questions: list[Question]


class PermissionRequested(TurnEvent, tag="permission_requested", kw_only=True):
    request_id: str
    tool_name: str
    description: str
    options: list[Any] | None = None


class StateSnapshot(SessionEvent, tag="state_snapshot", kw_only=True):
    """The reply to `join_session`: the session now, and where its stream stands. `gap` means
    events after the requested `afterSeq` are gone (rebuild from `get_history`)."""

    session: SessionMeta
    epoch: str
    last_seq: int
    gap: bool
    pending: list[QuestionRequested | PermissionRequested] = always_sent([])
    current_turn: CurrentTurn | None = None
    id: str | None = None


# ----- turns, tools, interaction ---------------------------------------------------------------


class TurnStarted(TurnEvent, tag="turn_started", kw_only=True):
    client_turn_id: str | None = None
    id: str | None = None


class TextDelta(TurnEvent, tag="text_delta", kw_only=True):
    text: str


class TurnComplete(TurnEvent, tag="turn_complete", kw_only=True):
    final_text: str
    stop_reason: str
    usage: Usage | None = None


class TurnError(TurnEvent, tag="turn_error", kw_only=True):
    code: str
    message: str


class ToolCallStart(TurnEvent, tag="tool_call_start", kw_only=True):
    tool_call_id: str
    tool_name: str


class ToolCallDelta(TurnEvent, tag="tool_call_delta", kw_only=True):
    tool_call_id: str
    args_delta: str


class ToolCall(TurnEvent, tag="tool_call", kw_only=True):
    tool_call_id: str
    tool_name: str
    args: Any


class ToolResult(TurnEvent, tag="tool_result", kw_only=True):
    tool_call_id: str
    output: Any
    is_error: bool = always_sent(False)


class ToolError(TurnEvent, tag="tool_error", kw_only=True):
    tool_call_id: str
    message: str


class ApprovalResolved(TurnEvent, tag="approval_resolved", kw_only=True):
    request_id: str
    approved: bool | None = None
    answers: dict[str, Any] | None = None
    dismissed: bool | None = None


class ThinkingStart(TurnEvent, tag="thinking.start", kw_only=True):
    pass


class ThinkingProgress(TurnEvent, tag="thinking.progress", kw_only=True):
    text: str


class ThinkingComplete(TurnEvent, tag="thinking.complete", kw_only=True):
    pass


class TerminalStream(TurnEvent, tag="terminal.stream", kw_only=True):
    data: str
    terminal_id: str | None = None


class TerminalComplete(TurnEvent, tag="terminal.complete", kw_only=True):
    exit_code: int
    terminal_id: str | None = None


class SandboxProvisioning(TurnEvent, tag="sandbox.provisioning", kw_only=True):
    pass


class SandboxInit(TurnEvent, tag="sandbox.init", kw_only=True):
    pass


class SandboxRemoved(TurnEvent, tag="sandbox.removed", kw_only=True):
    pass


class PlanCreated(TurnEvent, tag="plan.created", kw_only=True):
    steps: list[Any]


class PlanStepStarted(TurnEvent, tag="plan.step_started", kw_only=True):
    step_id: str


class PlanStepCompleted(TurnEvent, tag="plan.step_completed", kw_only=True):
    step_id: str


class PlanRevised(TurnEvent, tag="plan.revised", kw_only=True):
    steps: list[Any]


class FileChanged(TurnEvent, tag="file_changed", kw_only=True):
    path: str
    iteration: int | None = None


class UsageUpdate(TurnEvent, tag="usage_update", kw_only=True):
    input_tokens: int
    output_tokens: int
    cost: float | None = None


# ----- replies to reads -----------------------------------------------------------------------


class SessionList(ServerFrame, tag="session_list", kw_only=True):
    sessions: list[SessionMeta]
    id: str | None = None


class History(SessionEvent, tag="history", kw_only=True):
    messages: list[HistoryMessage]
    has_more: bool = always_sent(False)
    id: str | None = None


class Events(SessionEvent, tag="events", kw_only=True):
    """The reply to `get_events`: retained events after `afterSeq`, in seq order, spliced in as
    they were encoded for the stream. `has_more`: the reply stopped early (count or bytes), ask
    again from the last event's seq."""

    epoch: str
    events: list[msgspec.Raw]
    last_seq: int
    gap: bool
    has_more: bool = always_sent(False)
    id: str | None = None


class FileList(SessionEvent, tag="file_list", kw_only=True):
    path: str
    entries: list[FileEntry]
    id: str | None = None


class FileContent(SessionEvent, tag="file_content", kw_only=True):
    """`encoding` is `utf-8` or `base64`; `iteration` is set for `file_at_iteration`."""

    path: str
    content: str
    encoding: str = always_sent("utf-8")
    size: int = always_sent(0)
    iteration: int | None = None
    id: str | None = None


class FileHistory(SessionEvent, tag="file_history", kw_only=True):
    path: str
    iterations: list[FileIteration]
    id: str | None = None


class MemberList(ServerFrame, tag="member_list", kw_only=True):
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
