"""The client protocol: messages, events, error codes and their codec — pure, no I/O."""

from diminuendo.protocol.codec import DecodeFailure, decode_client_frame, encode_frame
from diminuendo.protocol.errors import ErrorCode, GatewayError

PROTOCOL_VERSION = 1
SUBPROTOCOL = "diminuendo.v1"  # the WebSocket subprotocol a browser offers beside `bearer.<jwt>`
SUPPORTED_VERSIONS = (1,)

__all__ = [
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "SUPPORTED_VERSIONS",
    "DecodeFailure",
    "ErrorCode",
    "GatewayError",
    "decode_client_frame",
    "encode_frame",
]
