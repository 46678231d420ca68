"""REST requests (PROTOCOL.md §8) as the WebSocket message structs of the same operations.

A request's JSON body, path and query values are converted into the message struct the
WebSocket would decode (`decode_body`, `message`), so REST has exactly the WebSocket's limits
and checks. The body structs below are only the OpenAPI schema of those bodies, derived from the
message structs (their fields minus the envelope and the path parameters), so they cannot drift.
Integers in query strings and headers are 1-16 ASCII digits (`count_param`).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from diminuendo.protocol import messages as m
from diminuendo.protocol import shapes
from diminuendo.protocol.codec import convert_message, decode_json
from diminuendo.protocol.errors import ErrorCode, GatewayError

T = TypeVar("T")

_DIGITS = re.compile(r"[0-9]{1,16}")


def _body_schema(name: str, message: type[m.ClientMessage], *path: str) -> type[msgspec.Struct]:
    """The REST body of `message`: its fields without `id` and the path parameters."""
    fields = [
        (f.name, f.type, f.default)
        for f in msgspec.structs.fields(message)
        if f.encode_name not in ("id", *path)
    ]
    return msgspec.defstruct(name, fields, rename="camel", kw_only=True, frozen=True)


CreateThread = _body_schema("CreateThread", m.CreateSession)
PostMessage = _body_schema("PostMessage", m.RunTurn, "sessionId")
SteerBody = _body_schema("SteerBody", m.Steer, "sessionId")
AnswerBody = _body_schema("AnswerBody", m.AnswerQuestion, "sessionId")


class PatchThread(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """`PATCH /api/threads/{id}`: a rename and/or (un)archive in one request."""

    name: m.Name | None = None
    archived: bool | None = None


# Reply shapes: the OpenAPI document's schemas (checked against real replies in the tests), the
# frames' own structs where a reply carries one (`SessionMeta`, `HistoryMessage`); the handlers
# build `ThreadList`, `TurnAccepted` and `ModelList` replies from them.


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class ThreadList(msgspec.Struct):
    threads: list[shapes.SessionMeta]


class TurnAccepted(msgspec.Struct, rename="camel"):
    turn_id: str


class History(msgspec.Struct, rename="camel"):
    """The `history` frame's fields, without the frame."""

    session_id: str
    messages: list[shapes.HistoryMessage]
    has_more: bool


class ModelList(msgspec.Struct):
    models: list[dict[str, Any]]


class Me(shapes.Identity):
    """`GET /api/me`: the identity of `authenticated`, with what its role may do."""

    permissions: list[str]


def decode_body(body: bytes | None, kind: type[T], **values: Any) -> T:
    """The JSON body plus the path and query `values` (None = absent) as the struct `kind`,
    or the documented 400."""
    try:
        fields = decode_json(body or b"{}")
    except msgspec.DecodeError:
        raise GatewayError(ErrorCode.INVALID_JSON, "Body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise GatewayError(ErrorCode.INVALID_MESSAGE, "The body must be a JSON object")
    fields.update((key, value) for key, value in values.items() if value is not None)
    return convert_message(fields, kind)


def message(kind: type[T], **values: Any) -> T:
    """The path and query `values` (None = absent) of a request without a body, as `kind`."""
    return convert_message({k: v for k, v in values.items() if v is not None}, kind)


def count_param(name: str, raw: str | None) -> int | None:
    """A whole number from a query parameter or header: 1-16 ASCII digits and nothing else
    (`int()` also takes `+5`, ` 5`, `1_0` and the digits of other scripts)."""
    if raw is None:
        return None
    if _DIGITS.fullmatch(raw) is None:
        raise GatewayError(ErrorCode.INVALID_MESSAGE, f"`{name}` must be 1 to 16 ASCII digits")
    return int(raw)
