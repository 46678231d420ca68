"""Decoding client frames and encoding server frames — pure functions, no I/O.

`decode_client_frame` never raises: every input becomes either a typed message or a
`DecodeFailure` carrying the documented error code, a message naming the offending field, and
the request `id` when one could be recovered (so even a rejected message can be correlated).

`decode_json` and `convert_message` are the same rules for REST bodies and RPC calls: the
nesting limit, then the WebSocket message structs (PROTOCOL §13: one validation everywhere).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, TypeVar

import msgspec

from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.messages import MESSAGE_TYPES, AnyClientMessage

T = TypeVar("T")

MAX_DEPTH = 64
TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_FOLD_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_ENVELOPE = ("type", "id")

_decoder = msgspec.json.Decoder(AnyClientMessage)
_raw_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

MAX_ERROR_DETAIL = 200


class _IdOnly(msgspec.Struct):
    id: str | None = None


_id_decoder = msgspec.json.Decoder(_IdOnly)


def peek_request_id(data: str | bytes) -> str | None:
    """The frame's `id`, for replies to frames that are refused before decoding (rate limit,
    nesting): a skim that allocates nothing but the id."""
    try:
        request_id = _id_decoder.decode(data).id
    except (msgspec.DecodeError, RecursionError):  # skipping ~1,000 levels recurses too deep
        return None
    return request_id if request_id is not None and len(request_id) <= 64 else None


class DecodeFailure(NamedTuple):
    code: ErrorCode
    message: str
    request_id: str | None = None


def too_deep(data: str | bytes) -> bool:
    """Is this JSON nested deeper than `MAX_DEPTH`?

    msgspec's own limit is the interpreter's recursion limit (~1,000 levels, then a
    `RecursionError`), and whatever it accepts is walked again by the encoder and the upstream
    clients. Most frames are answered by the length check or two `count` scans; only a frame
    with more than 64 opening brackets is measured, in C-speed passes: strings removed, the
    brackets kept, and innermost `[]` pairs stripped once per level. Text that is not
    balanced JSON is left to the decoder to refuse.
    """
    if len(data) <= 2 * MAX_DEPTH:
        return False
    if isinstance(data, str):
        if data.count("[") + data.count("{") <= MAX_DEPTH:
            return False
        data = data.encode("utf-8", "surrogatepass")
    elif data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    brackets = _STRING.sub(b"", data).translate(_FOLD_BRACKETS, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        inner = brackets.replace(b"[]", b"")
        if not inner or len(inner) == len(brackets):
            return False
        brackets = inner
    return True


def decode_json(data: str | bytes) -> Any:
    """Any JSON document within the nesting limit; `msgspec.DecodeError` otherwise."""
    if too_deep(data):
        raise msgspec.DecodeError(TOO_DEEP)
    return _raw_decoder.decode(data)


def convert_message(fields: dict[str, Any], kind: type[T]) -> T:
    """A REST request's body, path and query values, or an RPC call's params, as the struct
    `kind` (the WebSocket message of the same operation): the same field limits and checks on
    every surface. The envelope keys (`type`, `id`) are not the caller's to set here."""
    for key in _ENVELOPE:
        fields.pop(key, None)
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        message = _clip(f"Invalid input: {exc}", MAX_ERROR_DETAIL)
        raise GatewayError(ErrorCode.INVALID_MESSAGE, message) from None


def decode_client_frame(data: str | bytes) -> AnyClientMessage | DecodeFailure:
    """Turn one text frame into a message, or into the error the client should get for it."""
    if too_deep(data):
        return DecodeFailure(ErrorCode.INVALID_JSON, TOO_DEEP, peek_request_id(data))
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        return _validation_failure(data, str(exc))
    except msgspec.DecodeError:
        return DecodeFailure(ErrorCode.INVALID_JSON, "Frame is not valid JSON")


def _validation_failure(data: str | bytes, detail: str) -> DecodeFailure:
    """Second, slow-path parse: only rejected frames pay for it, to recover `id` and `type`."""
    try:
        raw = _raw_decoder.decode(data)
    except msgspec.DecodeError:  # the typed pass stopped before reaching the malformed part
        return DecodeFailure(ErrorCode.INVALID_JSON, "Frame is not valid JSON")
    if not isinstance(raw, dict):
        return DecodeFailure(ErrorCode.INVALID_MESSAGE, "A message must be a JSON object")
    request_id = raw.get("id")
    if not isinstance(request_id, str) or len(request_id) > 64:
        request_id = None
    message_type = raw.get("type")
    if "type" not in raw:
        message = "Missing required field `type`"
    elif not isinstance(message_type, str):
        message = "Field `type` must be a string"
    elif message_type not in MESSAGE_TYPES:
        message = f"Unknown message type `{_clip(message_type, 64)}`"
    else:
        message = f"Invalid `{message_type}` message: {_clip(detail, MAX_ERROR_DETAIL)}"
    return DecodeFailure(ErrorCode.INVALID_MESSAGE, message, request_id)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def encode_frame(frame: Any) -> bytes:
    """One server frame as the UTF-8 payload of a WebSocket text frame."""
    return _encoder.encode(frame)
