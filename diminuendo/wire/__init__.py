"""WebSocket framing without sockets or asyncio (RFC 6455 §5): one codec for every hand-driven
socket in the project — the gateway's fast writer (`diminuendo.sanic_ws`), the runtime socket
(`upstreams/runtime_socket.py`), the local Podium stand-in and the bench client.

`frames` encodes headers and whole frames and finds frame bounds in a buffer; `reader` splits a
byte stream into frames with a fast path for the small final text frames that make up nearly all
traffic. Everything else (handshakes, close and ping semantics, validation beyond the header) is
websockets' sans-I/O protocol, which the callers keep using where they need it.
"""

from diminuendo.wire.frames import (
    CLOSE,
    PING,
    PING_FRAME,
    PONG,
    TEXT,
    close_payload,
    frame_bounds,
    frame_header,
    masked_frame,
)
from diminuendo.wire.reader import FrameReader

__all__ = [
    "CLOSE",
    "PING",
    "PING_FRAME",
    "PONG",
    "TEXT",
    "FrameReader",
    "close_payload",
    "frame_bounds",
    "frame_header",
    "masked_frame",
]
