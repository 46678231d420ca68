"""Decoding client frames and encoding server frames — pure functions, no I/O.

`decode_client_frame` never raises: every input becomes either a typed message or a
`DecodeFailure` carrying the documented error code, a message naming the offending field, and
the request `id` when one could be recovered (so even a rejected message can be correlated).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from diminuendo.protocol.errors import ErrorCode
from diminuendo.protocol.messages import MESSAGE_TYPES, AnyClientMessage

_decoder = msgspec.json.Decoder(AnyClientMessage)
_raw_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

MAX_ERROR_DETAIL = 200


class _IdOnly(msgspec.Struct):
    id: str | None = None


_id_decoder = msgspec.json.Decoder(_IdOnly)


def peek_request_id(data: str | bytes) -> str | None:
    """The frame's `id`, for replies to frames that are refused before decoding (rate limit):
    a skim that allocates nothing but the id."""
    try:
        request_id = _id_decoder.decode(data).id
    except msgspec.DecodeError:
        return None
    return request_id if request_id is not None and len(request_id) <= 64 else None


class DecodeFailure(NamedTuple):
    code: ErrorCode
    message: str
    request_id: str | None = None


def decode_client_frame(data: str | bytes) -> AnyClientMessage | DecodeFailure:
    """Turn one text frame into a message, or into the error the client should get for it."""
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
