"""Writing text frames to a Sanic WebSocket in the caller's own step, while the socket keeps up.

Sanic's `Websocket.send` takes the connection's lock, awaits the transport's `_can_write` event
and awaits its HTTP protocol's `send` for every frame. At tens of thousands of frames per second
those awaits, and the writer task each caller needs to make them, are most of a core. While the
transport is below its high-water mark none of it is needed: the frame (a two-to-ten-byte header
and the payload) goes to the transport in one call, which takes it at once.

`writable` says when that is safe: the socket is open, the transport is not pushing back, and no
Sanic writer (keepalive ping, close) is in the middle of its own write — those hold `conn_mutex`
across their awaits, and a frame must not jump ahead of bytes they already took from the
`websockets` protocol object. When it is not, callers queue and `wait_writable` before trying again.

The receive side has one change too (`close_on_invalid_utf8`): a text message that is not
UTF-8 fails the connection with 1007, as RFC 6455 §8.1 and PROTOCOL §2 require.

This reaches below Sanic's public `Websocket` API to `ws_proto`, `io_proto` and the frame
assembler; Sanic is pinned to one major version in setup.cfg, and the backpressure,
slow-consumer and invalid-UTF-8 tests exercise it.
"""

from __future__ import annotations

import struct

from sanic.server.websockets.frame import WebsocketFrameAssembler
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.frames import Frame
from websockets.protocol import OPEN

__all__ = [
    "close_on_invalid_utf8",
    "is_open",
    "text_frame_header",
    "wait_writable",
    "writable",
    "write_ping",
    "write_text",
]

_PING_FRAME = b"\x89\x00"  # FIN + ping, unmasked, empty payload


def writable(ws: WebsocketImplProtocol) -> bool:
    """Can a text frame go to the transport now, behind nothing and interleaved with nothing?"""
    io = ws.io_proto
    if io is None or not io._can_write.is_set():
        return False
    transport = io.transport
    return (
        transport is not None
        and not transport.is_closing()
        and ws.ws_proto.state is OPEN
        and not ws.conn_mutex.locked()
    )


def is_open(ws: WebsocketImplProtocol) -> bool:
    """Can anything still be sent (now or once the transport drains)?"""
    io = ws.io_proto
    transport = io.transport if io is not None else None
    return transport is not None and not transport.is_closing() and ws.ws_proto.state is OPEN


def write_text(ws: WebsocketImplProtocol, data: bytes) -> None:
    """Send `data` (UTF-8 JSON) as one text message. Only call after `writable(ws)` answered
    True in the same synchronous step."""
    ws.io_proto.transport.write(text_frame_header(len(data)) + data)


def write_ping(ws: WebsocketImplProtocol) -> None:
    """Send a ping with an empty payload (after `writable(ws)`, like `write_text`)."""
    ws.io_proto.transport.write(_PING_FRAME)


_SHORT = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack


def text_frame_header(length: int) -> bytes:
    """The RFC 6455 header of one unfragmented, unmasked (server-to-client), uncompressed text
    frame. `websockets` builds the same bytes through `Frame.serialize`, which measured 10 µs a
    frame here (its generality: extensions, masking, validation); the header alone is this. The
    protocol object has nothing to track for such a frame (no fragmentation state, and Sanic
    negotiates no extensions), so bypassing it loses nothing."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return _SHORT(0x81, 126, length)
    return _LONG(0x81, 127, length)


async def wait_writable(ws: WebsocketImplProtocol) -> None:
    """Return once the transport has drained below its low-water mark and no Sanic writer holds
    the socket. The caller checks `is_open` afterwards: the socket may have closed meanwhile."""
    io = ws.io_proto
    if io is not None:
        await io._can_write.wait()
    async with ws.conn_mutex:
        pass


CLOSE_INVALID_DATA = 1007


class _Utf8CheckingAssembler(WebsocketFrameAssembler):
    """Sanic's frame assembler, which decodes text frames strictly but lets the
    `UnicodeDecodeError` escape into a task nobody awaits: the frame vanished without an
    answer, and the half-assembled message was glued onto the next one. Here the error fails
    the connection with 1007 instead, and nothing that arrives after it is assembled."""

    __slots__ = ()

    async def put(self, frame: Frame) -> None:
        if self.protocol.ws_proto.state is not OPEN:
            return
        try:
            await super().put(frame)
        except UnicodeDecodeError:
            self.chunks = []
            self.decoder = None
            self.protocol.fail_connection(CLOSE_INVALID_DATA, "invalid UTF-8")


def close_on_invalid_utf8(ws: WebsocketImplProtocol) -> None:
    """Install the checking assembler on a socket fresh from the handshake (before any frame
    has been read: call it in the same step as the handshake returns)."""
    ws.assembler = _Utf8CheckingAssembler(ws)
