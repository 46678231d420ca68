"""The one module that reaches below Sanic's and websockets' public APIs (checked at start-up).

Writing text frames to a Sanic WebSocket in the caller's own step, while the socket keeps up.
Sanic's `Websocket.send` takes the connection's lock, awaits the transport's `_can_write` event
and awaits its HTTP protocol's `send` for every frame. At tens of thousands of frames per second
those awaits, and the writer task each caller needs to make them, are most of a core. While the
transport is below its high-water mark none of it is needed: the frame (a two-to-ten-byte header
from `diminuendo.wire` and the payload) goes to the transport in one call, which takes it at once.

`writable` says when that is safe: the socket is open, the transport is not pushing back, and no
Sanic writer (keepalive ping, close) is in the middle of its own write — those hold `conn_mutex`
across their awaits, and a frame must not jump ahead of bytes they already took from the
`websockets` protocol object. When it is not, callers queue and `wait_writable` before trying again.

The receive side has two changes: a text message that is not UTF-8 fails the connection with
1007, as RFC 6455 §8.1 and PROTOCOL §2 require (`close_on_invalid_utf8`), and once the handler
stops reading, what the client still sends is dropped instead of waiting forever in Sanic's
tasks (`stop_receiving`). For the gateway's connection protocol (`gateway.ws`), `http_idle` and
`keep_alive_from_now` read and reset Sanic's per-connection HTTP state.

Every attribute read here is listed in `_INTERNALS`; `check_internals` (run by `create_app`)
fails with the attribute's name when a Sanic or websockets release moves one, and
tests/unit/test_sanic_ws.py pins the versions it was checked against to setup.cfg's.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import sanic
import websockets
from sanic.http.constants import Stage
from sanic.http.http1 import Http
from sanic.server.protocols.base_protocol import SanicProtocol
from sanic.server.protocols.http_protocol import HttpProtocol
from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from sanic.server.websockets.frame import WebsocketFrameAssembler
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.frames import Frame
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from diminuendo.wire import PING_FRAME, frame_header

__all__ = [
    "SUPPORTED_VERSIONS",
    "check_internals",
    "close_on_invalid_utf8",
    "http_idle",
    "is_open",
    "keep_alive_from_now",
    "last_heard",
    "last_request",
    "server_stopping",
    "stop_receiving",
    "unsent_bytes",
    "wait_drained",
    "wait_writable",
    "writable",
    "write_ping",
    "write_queued",
    "write_text",
]

# The releases `_INTERNALS` was checked against; setup.cfg pins the same ranges.
SUPPORTED_VERSIONS = {"sanic": ">=25.12,<26", "websockets": ">=14,<18"}


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


def unsent_bytes(ws: WebsocketImplProtocol) -> int:
    """Bytes the transport holds that the client has not taken yet (0 once it is gone)."""
    io = ws.io_proto
    transport = io.transport if io is not None else None
    return transport.get_write_buffer_size() if transport is not None else 0


def write_text(ws: WebsocketImplProtocol, data: bytes) -> None:
    """Send `data` (UTF-8 JSON) as one text message. Only call after `writable(ws)` answered
    True in the same synchronous step. The protocol object has nothing to track for such a
    frame (no fragmentation state, and Sanic negotiates no extensions), so bypassing it loses
    nothing."""
    ws.io_proto.transport.write(frame_header(len(data)) + data)


def write_queued(ws: WebsocketImplProtocol, queue: deque[bytes]) -> int:
    """Move queued text frames to the transport, in order, while it is `writable`; the bytes
    moved. The one way a queue of ours (a client's `Connection`, a stand-in runtime's outbox)
    drains into a socket."""
    written = 0
    while queue and writable(ws):
        data = queue.popleft()
        written += len(data)
        write_text(ws, data)
    return written


def write_ping(ws: WebsocketImplProtocol) -> None:
    """Send a ping with an empty payload (after `writable(ws)`, like `write_text`)."""
    ws.io_proto.transport.write(PING_FRAME)


def last_heard(ws: WebsocketImplProtocol) -> float:
    """When the client last sent anything, as the gateway's connection protocol records it."""
    return ws.io_proto.last_heard


async def wait_drained(protocol: Any) -> None:
    """Return once the transport of a Sanic connection protocol (HTTP or WebSocket) is below its
    low-water mark: Sanic pauses and resumes writing through its `_can_write` event. (For a
    streamed HTTP response, e.g. SSE, whose `send` waits before writing, not after.)"""
    await protocol._can_write.wait()


async def wait_writable(ws: WebsocketImplProtocol) -> None:
    """Return once the transport has drained below its low-water mark and no Sanic writer holds
    the socket. The caller checks `is_open` afterwards: the socket may have closed meanwhile."""
    io = ws.io_proto
    if io is not None:
        await io._can_write.wait()
    async with ws.conn_mutex:
        pass


def http_idle(protocol: HttpProtocol) -> bool:
    """Is no HTTP request in progress on this connection (none started, or the last answered)?"""
    http = getattr(protocol, "_http", None)
    return http is None or http.stage is Stage.IDLE


def last_request(protocol: HttpProtocol) -> None:
    """Close the connection once the request in progress is answered, instead of keeping it
    open for the client's next one (a response not started yet says `Connection: close`)."""
    http = getattr(protocol, "_http", None)
    if http is not None:
        http.keep_alive = False


def server_stopping(protocol: SanicProtocol) -> bool:
    """Has Sanic's shutdown begun closing connections (the listener is closed)?"""
    return protocol.signal.stopped


def keep_alive_from_now(protocol: HttpProtocol) -> None:
    """Restart Sanic's keep-alive timeout, as Sanic does after a response it wrote itself."""
    protocol._time = time.monotonic()


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


class _DropFrames:
    """A frame assembler that takes every frame and keeps none (see `stop_receiving`)."""

    async def put(self, frame: object) -> None:
        return None


_DROP_FRAMES = _DropFrames()


def stop_receiving(ws: WebsocketImplProtocol) -> None:
    """Drop whatever the client still sends, once the handler has stopped reading.

    Sanic hands every received message to its frame assembler from a task of its own (one per
    burst of received bytes), and that task waits until the handler fetches the message; the
    tasks of later bursts wait behind it. A handler that has returned never fetches again, so
    those tasks waited forever: about one task left behind per connection that closed with
    messages in flight. Swapping in an assembler that drops frames, releasing the message
    Sanic is waiting on, and resuming reading lets them all end.
    """
    assembler = ws.assembler
    if assembler is _DROP_FRAMES:
        return
    ws.assembler = _DROP_FRAMES  # type: ignore[assignment]
    assembler.message_fetched.set()
    if ws.pause_frame_fut is not None:
        ws.resume_frames()


# What this module, and `gateway.ws.GatewayWebSocketProtocol` (a subclass of Sanic's), read below
# the public APIs, by owner: checked on the real classes (and on a real `WebsocketImplProtocol`,
# whose attributes are set in `__init__`), not on version strings.
_INTERNALS: dict[str, tuple[str, ...]] = {
    "SanicProtocol": ("_can_write", "_time", "signal", "transport"),
    "HttpProtocol": ("_http", "recv_buffer"),
    "WebSocketProtocol": ("websocket",),
    "Http": ("keep_alive", "stage"),
    "WebsocketImplProtocol": (
        "assembler",
        "conn_mutex",
        "fail_connection",
        "io_proto",
        "pause_frame_fut",
        "resume_frames",
        "ws_proto",
    ),
    "WebsocketFrameAssembler": ("chunks", "decoder", "message_fetched", "protocol", "put"),
    "ServerProtocol": ("state",),
}


def check_internals() -> None:
    """Raise `RuntimeError` naming every attribute of `_INTERNALS` the installed Sanic or
    websockets no longer has: an upgrade that moved one fails at start-up, not on a frame."""
    owners: dict[str, object] = {
        "SanicProtocol": SanicProtocol,
        "HttpProtocol": HttpProtocol,
        "WebSocketProtocol": WebSocketProtocol,
        "Http": Http,
        "WebsocketImplProtocol": WebsocketImplProtocol(ServerProtocol()),
        "WebsocketFrameAssembler": WebsocketFrameAssembler,
        "ServerProtocol": ServerProtocol(),
    }
    missing = [
        f"{owner}.{name}"
        for owner, names in _INTERNALS.items()
        for name in names
        if not hasattr(owners[owner], name)
    ]
    if missing:
        raise RuntimeError(
            f"diminuendo.sanic_ws reads {', '.join(missing)}, which sanic {sanic.__version__} / "
            f"websockets {websockets.__version__} no longer have (checked against "
            f"sanic{SUPPORTED_VERSIONS['sanic']}, websockets{SUPPORTED_VERSIONS['websockets']})"
        )
