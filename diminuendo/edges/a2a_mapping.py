"""A2A projection: the gateway's session events → A2A task events, and the other pure parts of
the A2A edge (which permission each JSON-RPC method needs, how an answer is read from a
message, gateway errors as A2A errors). No I/O; the adapter is diminuendo/edges/a2a.py.

A task is a turn and its context is the session (`contextId` = session id). The rows
(docs/EDGES.md has the table for users):

* `turn_started` → status `working` (metadata: `turnId`);
* `text_delta` → chunks of the `response` artifact; `turn_complete` → that artifact once more,
  whole (`append: false`, `lastChunk: true`), then status `completed` (`canceled` when the turn
  was stopped) with the usage in its metadata;
* `thinking.progress`, `tool_call`, `tool_result`, `tool_error`, `plan.*` → status `working` with a
  message: a short text for people and the gateway event itself as a data part;
* `file_changed` → a `FileArtifact` request: the adapter reads the file and sends it as an
  artifact named by its path;
* `question_requested` / `permission_requested` → status `input-required`, the question as text
  and data; the next message on the task is the answer (`answer_from`);
* `turn_error` → status `failed` with the error's code and message.

Every event carries the gateway's `seq` in its metadata, so an A2A client can join the same
session on `/ws` (or `/api/threads/{id}/events`) from where it stands.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

import msgspec
from a2a.helpers.proto_helpers import new_data_part, new_text_part
from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Role,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import A2AError, InternalError, InvalidParamsError
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from diminuendo.edges.text import as_text
from diminuendo.protocol import messages as m
from diminuendo.protocol.errors import ErrorCode, GatewayError

RESPONSE_ARTIFACT = "response"

# JSON-RPC method (current names and the 0.3 ones) → the operation whose permission it needs.
# Anything else (push notification configs, the extended card, unknown names) needs READ: the
# SDK answers it, usually with "unsupported".
METHOD_OPERATIONS: dict[str, type[m.ClientMessage]] = {
    "SendMessage": m.RunTurn,
    "SendStreamingMessage": m.RunTurn,
    "message/send": m.RunTurn,
    "message/stream": m.RunTurn,
    "CancelTask": m.StopTurn,
    "tasks/cancel": m.StopTurn,
    "GetTask": m.JoinSession,
    "tasks/get": m.JoinSession,
    "SubscribeToTask": m.JoinSession,
    "tasks/resubscribe": m.JoinSession,
    "ListTasks": m.ListSessions,
}

_YES = {"yes", "y", "allow", "approve", "approved", "ok", "true"}
_NO = {"no", "n", "deny", "denied", "reject", "refuse", "false"}


# The methods answered with a stream that lasts a turn: each holds a place toward the
# connection limits while it is open, as REST's SSE does (docs/EDGES.md "Limits").
STREAMING_METHODS = frozenset(
    {"SendStreamingMessage", "message/stream", "SubscribeToTask", "tasks/resubscribe"}
)


class RpcCall(msgspec.Struct):
    """What the route reads of a JSON-RPC request before the SDK does: its method and id."""

    method: Any = None
    id: Any = None

    @property
    def operation(self) -> type[m.ClientMessage]:
        """The operation the call performs (READ when its method is unknown or unreadable)."""
        if not isinstance(self.method, str):
            return m.ListSessions
        return METHOD_OPERATIONS.get(self.method, m.ListSessions)

    @property
    def streams(self) -> bool:
        return isinstance(self.method, str) and self.method in STREAMING_METHODS


def rpc_call(body: bytes) -> RpcCall:
    """The request's method and id; empty when the body cannot be read (the SDK then answers
    the parse error itself)."""
    try:
        return msgspec.json.decode(body, type=RpcCall)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return RpcCall()


# A document nested deeper than the gateway's limit is refused before any parser (ours or the
# SDK's) recurses into it (PROTOCOL §13): JSON-RPC's parse error, as `/rpc` answers.
TOO_DEEP_RESPONSE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": None,
    "error": {"code": -32700, "message": "Parse error: JSON nested too deeply"},
}


def rpc_error(call: RpcCall, exc: GatewayError) -> dict[str, Any]:
    """The JSON-RPC error response refusing `call` (a gateway refusal before the SDK sees it)."""
    request_id = call.id if isinstance(call.id, str | int) else None
    return build_error_response(request_id, a2a_error(exc))


def a2a_error(exc: GatewayError) -> A2AError:
    """A gateway error as the A2A error a client sees; the §12 code rides in `data.code`."""
    data = {"code": exc.code.value}
    if exc.code in (ErrorCode.SESSION_NOT_FOUND, ErrorCode.INVALID_MESSAGE):
        return InvalidParamsError(message=exc.message, data=data)
    return InternalError(message=exc.message, data=data)


class FileArtifact(NamedTuple):
    """Read `path` (at `iteration`) and send it as an artifact."""

    path: str
    iteration: int | None
    seq: int


class Pause(NamedTuple):
    """The turn waits for an answer: the task goes `input-required`."""

    request_id: str


class Done(NamedTuple):
    """The turn is over; the task is in a terminal state."""


Item = TaskStatusUpdateEvent | TaskArtifactUpdateEvent | FileArtifact | Pause | Done


class TaskProjection:
    """One task's view of its turn. `project(event, seq)` never raises; an event with no row
    gives []. `epoch` goes into the metadata of the `input-required` status, so the answer can
    resume the stream exactly after it."""

    def __init__(self, task_id: str, context_id: str, epoch: str) -> None:
        self.task_id = task_id
        self.context_id = context_id
        self.epoch = epoch
        self.turn_id: str | None = None
        self._text_started = False

    def project(self, event: dict[str, Any], seq: int) -> list[Item]:
        turn_id = event.get("turnId")
        if turn_id is not None and self.turn_id is not None and turn_id != self.turn_id:
            return []  # another turn of the session (one run on /ws before ours)
        row = _ROWS.get(event.get("type", ""))
        return row(self, event, seq) if row is not None else []

    def status(
        self,
        state: TaskState,
        seq: int,
        text: str | None = None,
        data: Any = None,
        **metadata: Any,
    ) -> TaskStatusUpdateEvent:
        parts = [new_text_part(text)] if text else []
        if data is not None:
            parts.append(new_data_part(data))
        status = TaskStatus(state=state)
        if parts:
            status.message.CopyFrom(
                Message(
                    message_id=str(uuid.uuid4()),
                    role=Role.ROLE_AGENT,
                    parts=parts,
                    context_id=self.context_id,
                    task_id=self.task_id,
                )
            )
        return TaskStatusUpdateEvent(
            task_id=self.task_id,
            context_id=self.context_id,
            status=status,
            metadata=_struct({"seq": seq, **metadata}),
        )

    def artifact(
        self,
        artifact_id: str,
        parts: list[Part],
        seq: int,
        *,
        append: bool = False,
        last_chunk: bool = True,
    ) -> TaskArtifactUpdateEvent:
        return TaskArtifactUpdateEvent(
            task_id=self.task_id,
            context_id=self.context_id,
            artifact=Artifact(artifact_id=artifact_id, name=artifact_id, parts=parts),
            append=append,
            last_chunk=last_chunk,
            metadata=_struct({"seq": seq}),
        )

    def _started(self, event: dict[str, Any], seq: int) -> list[Item]:
        self.turn_id = event.get("turnId")
        return [self.status(TaskState.TASK_STATE_WORKING, seq, turnId=self.turn_id)]

    def _text(self, event: dict[str, Any], seq: int) -> list[Item]:
        chunk = self.artifact(
            RESPONSE_ARTIFACT,
            [new_text_part(event.get("text", ""))],
            seq,
            append=self._text_started,
            last_chunk=False,
        )
        self._text_started = True
        return [chunk]

    def _progress(self, event: dict[str, Any], seq: int) -> list[Item]:
        return [self.status(TaskState.TASK_STATE_WORKING, seq, _progress_text(event), event)]

    def _file(self, event: dict[str, Any], seq: int) -> list[Item]:
        return [FileArtifact(event.get("path", ""), event.get("iteration"), seq)]

    def _ask(self, event: dict[str, Any], seq: int) -> list[Item]:
        request_id = event.get("requestId", "")
        status = self.status(
            TaskState.TASK_STATE_INPUT_REQUIRED,
            seq,
            question_text(event),
            event,
            turnId=self.turn_id,
            epoch=self.epoch,
            lastSeq=seq,
            requestId=request_id,
        )
        return [status, Pause(request_id)]

    def _complete(self, event: dict[str, Any], seq: int) -> list[Item]:
        final = self.artifact(RESPONSE_ARTIFACT, [new_text_part(event.get("finalText", ""))], seq)
        cancelled = event.get("stopReason") == "cancelled"
        state = TaskState.TASK_STATE_CANCELED if cancelled else TaskState.TASK_STATE_COMPLETED
        extra = {"usage": event["usage"]} if event.get("usage") else {}
        return [final, self.status(state, seq, stopReason=event.get("stopReason"), **extra), Done()]

    def _error(self, event: dict[str, Any], seq: int) -> list[Item]:
        code, message = event.get("code", "UPSTREAM_ERROR"), event.get("message", "")
        failed = self.status(
            TaskState.TASK_STATE_FAILED,
            seq,
            f"{code}: {message}",
            {"code": code, "message": message},
        )
        return [failed, Done()]


_ROWS = {
    "turn_started": TaskProjection._started,
    "text_delta": TaskProjection._text,
    "thinking.progress": TaskProjection._progress,
    "tool_call": TaskProjection._progress,
    "tool_result": TaskProjection._progress,
    "tool_error": TaskProjection._progress,
    "plan.created": TaskProjection._progress,
    "plan.revised": TaskProjection._progress,
    "plan.step_started": TaskProjection._progress,
    "plan.step_completed": TaskProjection._progress,
    "file_changed": TaskProjection._file,
    "question_requested": TaskProjection._ask,
    "permission_requested": TaskProjection._ask,
    "turn_complete": TaskProjection._complete,
    "turn_error": TaskProjection._error,
}


def _progress_text(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind == "thinking.progress":
        return f"Thinking: {event.get('text', '')}"
    if kind == "tool_call":
        return f"Running {event.get('toolName', 'a tool')}"
    if kind == "tool_result":
        return "Tool call failed" if event.get("isError") else "Tool call finished"
    if kind == "tool_error":
        return f"Tool call failed: {event.get('message', '')}"
    if kind in ("plan.created", "plan.revised"):
        titles = [s.get("title", "") for s in event.get("steps", []) if isinstance(s, dict)]
        return "Plan: " + "; ".join(f"{i}. {t}" for i, t in enumerate(titles, 1))
    done = "finished" if kind == "plan.step_completed" else "started"
    return f"Step {event.get('stepId', '')} {done}"


def question_text(event: dict[str, Any]) -> str:
    """A question or permission request as a person reads it, with how to answer in text."""
    if event.get("type") == "permission_requested":
        tool, description = event.get("toolName", "a tool"), event.get("description", "")
        return f"Allow {tool}? {description} Answer yes or no."
    lines = []
    for question in event.get("questions", []):
        options = question.get("options") or []
        choices = f" [{' / '.join(as_text(o) for o in options)}]" if options else ""
        lines.append(f"{question.get('text', '')}{choices}")
    if len(lines) > 1:
        lines.append("Answer each question on its own line.")
    return "\n".join(lines)


class Answer(NamedTuple):
    answers: dict[str, Any] | None
    approved: bool | None
    dismissed: bool | None


def answer_from(pending: dict[str, Any], message: Message | None) -> Answer | str:
    """Read the answer to `pending` (a question or permission event) from a message: a data part
    `{answers | approved | dismissed}` as is, else its text (yes/no for a permission; one line
    per question, an option matched case-insensitively). A string is what to ask again."""
    parts = list(message.parts) if message is not None else []
    for part in parts:
        if part.HasField("data"):
            data = MessageToDict(part.data)
            if isinstance(data, dict) and {"answers", "approved", "dismissed"} & data.keys():
                answers = data.get("answers")
                return Answer(
                    answers if isinstance(answers, dict) else None,
                    data.get("approved") if isinstance(data.get("approved"), bool) else None,
                    data.get("dismissed") if isinstance(data.get("dismissed"), bool) else None,
                )
    text = "\n".join(part.text for part in parts if part.HasField("text")).strip()
    if pending.get("type") == "permission_requested":
        word = text.lower().rstrip(".!")
        if word in _YES | _NO:
            return Answer(None, word in _YES, None)
        return "Please answer yes or no. " + question_text(pending)
    questions = [q for q in pending.get("questions", []) if isinstance(q, dict)]
    lines = (
        [text] if len(questions) == 1 else [ln.strip() for ln in text.splitlines() if ln.strip()]
    )
    if not text or len(lines) != len(questions):
        return question_text(pending)
    answers = {}
    for question, line in zip(questions, lines, strict=True):
        options = question.get("options") or []
        match = next((o for o in options if as_text(o).lower() == line.lower()), line)
        answers[question.get("id", "")] = match
    return Answer(answers, None, None)


def _struct(values: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update({k: v for k, v in values.items() if v is not None})
    return struct
