"""Client → server messages (PROTOCOL.md §5) as msgspec structs: the types are the validation.

One tagged union decoded in one pass; unknown fields are ignored, a missing or ill-typed field is
rejected with msgspec's message, which names the field (`… - at $.sessionId`). Constraints that
a type cannot say (byte sizes, safe relative paths) live in `__post_init__`, whose `ValueError`
msgspec reports as a validation error too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

MAX_TEXT_BYTES = 256 * 1024
MAX_METADATA_BYTES = 16 * 1024

# Field types shared by every message, REST body and RPC call. Every string that can end up in an
# upstream URL (ids, paths, `before`, agent types) has an upper bound here (PROTOCOL §13).
RequestId = Annotated[str, msgspec.Meta(max_length=64)]
SessionId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
AgentType = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ProjectId = Annotated[str, msgspec.Meta(max_length=128)]
ClientTurnId = Annotated[str, msgspec.Meta(max_length=64)]
Epoch = Annotated[str, msgspec.Meta(max_length=64)]
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
QuestionId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
FilePath = Annotated[str, msgspec.Meta(max_length=1024)]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
RoleName = Annotated[str, msgspec.Meta(max_length=32)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class ClientMessage(msgspec.Struct, tag_field="type", rename="camel", kw_only=True, frozen=True):
    """Fields every message may carry; `id` is echoed on every direct reply."""

    id: RequestId | None = None


def check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is not None and len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise ValueError("Invalid field `metadata`: larger than 16 KiB")


def check_text(text: str) -> None:
    # Characters are at most 4 bytes: only encode when the text could be over the limit.
    if len(text) * 4 > MAX_TEXT_BYTES and len(text.encode()) > MAX_TEXT_BYTES:
        raise ValueError("Invalid field `text`: larger than 256 KiB")


def _check_relative_path(path: str) -> None:
    if "\x00" in path:
        raise ValueError("Invalid field `path`: NUL byte")
    if path.startswith("/") or path.startswith("\\"):
        raise ValueError("Invalid field `path`: must be relative")
    if any(part == ".." for part in path.replace("\\", "/").split("/")):
        raise ValueError("Invalid field `path`: `..` segments are not allowed")


class Authenticate(ClientMessage, tag="authenticate"):
    token: Annotated[str, msgspec.Meta(min_length=1)]
    protocol_version: int | None = None


class Ping(ClientMessage, tag="ping"):
    ts: int | float | None = None


class ListSessions(ClientMessage, tag="list_sessions"):
    include_archived: bool = False


class CreateSession(ClientMessage, tag="create_session"):
    agent_type: AgentType
    name: Name | None = None
    project_id: ProjectId | None = None
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_metadata(self.metadata)


class RenameSession(ClientMessage, tag="rename_session"):
    session_id: SessionId
    name: Name


class ArchiveSession(ClientMessage, tag="archive_session"):
    session_id: SessionId


class UnarchiveSession(ClientMessage, tag="unarchive_session"):
    session_id: SessionId


class DeleteSession(ClientMessage, tag="delete_session"):
    session_id: SessionId


class JoinSession(ClientMessage, tag="join_session"):
    session_id: SessionId
    after_seq: NonNegative | None = None
    epoch: Epoch | None = None


class LeaveSession(ClientMessage, tag="leave_session"):
    session_id: SessionId


class RunTurn(ClientMessage, tag="run_turn"):
    session_id: SessionId
    text: Annotated[str, msgspec.Meta(min_length=1)]
    client_turn_id: ClientTurnId | None = None

    def __post_init__(self) -> None:
        check_text(self.text)


class StopTurn(ClientMessage, tag="stop_turn"):
    session_id: SessionId


class Steer(ClientMessage, tag="steer"):
    session_id: SessionId
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_BYTES)]


class AnswerQuestion(ClientMessage, tag="answer_question"):
    session_id: SessionId
    request_id: QuestionId
    answers: dict[str, Any] | None = None
    # Unanswered means not approved: a permission request fails closed.
    approved: bool = False
    dismissed: bool = False

    def __post_init__(self) -> None:
        if self.approved and self.dismissed:
            raise ValueError("Invalid fields `approved` and `dismissed`: not both true")


class GetHistory(ClientMessage, tag="get_history"):
    session_id: SessionId
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    before: MessageId | None = None


class GetEvents(ClientMessage, tag="get_events"):
    session_id: SessionId
    after_seq: NonNegative
    epoch: Epoch | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500


class ListFiles(ClientMessage, tag="list_files"):
    session_id: SessionId
    path: FilePath = ""
    depth: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1

    def __post_init__(self) -> None:
        _check_relative_path(self.path)


class ReadFile(ClientMessage, tag="read_file"):
    session_id: SessionId
    path: Annotated[FilePath, msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        _check_relative_path(self.path)


class FileHistory(ClientMessage, tag="file_history"):
    session_id: SessionId
    path: Annotated[FilePath, msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        _check_relative_path(self.path)


class FileAtIteration(ClientMessage, tag="file_at_iteration"):
    session_id: SessionId
    path: Annotated[FilePath, msgspec.Meta(min_length=1)]
    iteration: Annotated[int, msgspec.Meta(ge=1)]

    def __post_init__(self) -> None:
        _check_relative_path(self.path)


class ManageMembers(ClientMessage, tag="manage_members"):
    action: Literal["list", "add", "update", "remove"]
    user_id: UserId | None = None
    role: RoleName | None = None


AnyClientMessage = (
    Authenticate
    | Ping
    | ListSessions
    | CreateSession
    | RenameSession
    | ArchiveSession
    | UnarchiveSession
    | DeleteSession
    | JoinSession
    | LeaveSession
    | RunTurn
    | StopTurn
    | Steer
    | AnswerQuestion
    | GetHistory
    | GetEvents
    | ListFiles
    | ReadFile
    | FileHistory
    | FileAtIteration
    | ManageMembers
)

MESSAGE_TYPES: frozenset[str] = frozenset(
    cls.__struct_config__.tag
    for cls in AnyClientMessage.__args__  # type: ignore[attr-defined]
)
