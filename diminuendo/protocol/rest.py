"""REST request bodies (PROTOCOL.md §8) as msgspec structs, with the same limits as the
WebSocket messages, and one decoder that turns any bad body into `INVALID_MESSAGE`."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec

from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.messages import MAX_TEXT_BYTES, check_metadata, check_text
from diminuendo.protocol.models import SessionRecord

T = TypeVar("T")


class CreateThread(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    agent_type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    project_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_metadata(self.metadata)


class PatchThread(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    archived: bool | None = None


class PostMessage(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    text: Annotated[str, msgspec.Meta(min_length=1)]
    client_turn_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None

    def __post_init__(self) -> None:
        check_text(self.text)


class SteerBody(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_BYTES)]


class AnswerBody(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    answers: dict[str, Any] | None = None
    approved: bool | None = None
    dismissed: bool | None = None


# Reply shapes: the REST handlers build these as plain dicts on the hot path; the structs are
# their schema for the OpenAPI document (and are checked against real replies in the tests).


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class ThreadList(msgspec.Struct):
    threads: list[SessionRecord]


class TurnAccepted(msgspec.Struct, rename="camel"):
    turn_id: str


class HistoryToolCall(msgspec.Struct, rename="camel"):
    tool_call_id: str
    tool_name: str
    args: Any = None
    output: Any = None


class HistoryMessage(msgspec.Struct, rename="camel"):
    id: str
    role: str
    text: str
    turn_id: str | None
    ts: int
    tool_calls: list[HistoryToolCall] | None = None


class History(msgspec.Struct, rename="camel"):
    session_id: str
    messages: list[HistoryMessage]
    has_more: bool


class ModelList(msgspec.Struct):
    models: list[dict[str, Any]]


class Me(msgspec.Struct, rename="camel"):
    user_id: str
    email: str | None
    tenant_id: str
    role: str
    permissions: list[str]


def decode_body(body: bytes | None, kind: type[T]) -> T:
    """Decode and validate a JSON body, or raise the documented 400."""
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise GatewayError(ErrorCode.INVALID_MESSAGE, f"Invalid body: {exc}"[:300]) from None
    except msgspec.DecodeError:
        raise GatewayError(ErrorCode.INVALID_JSON, "Body is not valid JSON") from None
