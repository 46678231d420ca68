"""A lean WebSocket client for upstream sockets that carry many small messages.

Why not `websockets.asyncio.client`: it hands each message through an Assembler, a future and a
task switch to an `async for` loop, and decodes it to `str` before we parse it again. Profiles put
that at 25-30 µs of CPU per inbound frame against 2.3 µs for the rest of the pipeline
(bench/RESULTS.md, hot spot 4), and the gateway holds one such socket per active session.

`ClientSocket` drives websockets' Sans-I/O `ClientProtocol` straight from `asyncio.Protocol`
callbacks instead: `data_received` feeds the parser and hands each complete text message to
`on_message(bytes)` synchronously, in order, with no task, future or copy per message. Pings from
the server are answered by the protocol (we flush its output after every read and every send).

Fast path: websockets' generator-based `Frame.parse` was 20% of the gateway's CPU at 20,000
inbound frames/s, so once the socket is open a `diminuendo.wire.FrameReader` splits the bytes and
hands plain text payloads straight to `on_message`; everything else goes to the protocol. The
opening handshake is fed to the protocol up to the end of the 101 response only.

Keepalive without a task: each socket owns one timer (`keepalive.KeepaliveTimer`); a pong that
does not come within `ping_timeout` fails the connection, so a dead peer is noticed.

Not supported (the runtime socket does not need them): compression, subprotocols, HTTP proxies,
redirects, binary messages (dropped), sending fragmented messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import cast

from loguru import logger
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.frames import BINARY, CONT, PONG, TEXT, CloseCode, Frame
from websockets.http11 import USER_AGENT
from websockets.protocol import CLOSED, OPEN
from websockets.uri import parse_uri

from diminuendo.upstreams.keepalive import KeepaliveTimer
from diminuendo.wire import FrameReader

MessageHandler = Callable[[bytes], None]

# How `data_received` reads: the opening handshake's response, then frames (the fast path),
# then, once anything unusual has happened, everything through the protocol's own parser.
_RESPONSE, _FRAMES, _PROTOCOL = "response", "frames", "protocol"


class SocketUnavailable(Exception):
    """The TCP connection or the WebSocket opening handshake failed (or timed out)."""


class ClientSocket(asyncio.Protocol):
    """One client WebSocket: an `asyncio.Protocol` around a Sans-I/O `ClientProtocol`.

    Open it with `open_socket`. Callbacks run synchronously from the event loop: `on_message`
    once per complete text message, then `on_closed(self)` once when the TCP connection is gone.
    Both are held back until the opener has resumed (see `open_socket`) and silenced by `close()`.
    """

    def __init__(
        self,
        protocol: ClientProtocol,
        *,
        on_message: MessageHandler,
        on_closed: Callable[[ClientSocket], None],
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
    ) -> None:
        self._protocol = protocol
        self._on_message = on_message
        self._on_closed = on_closed
        self._ping_timeout = ping_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] | None = self._loop.create_future()
        # Messages (and the close) that arrive before the opener is ready for callbacks.
        self._held: list[bytes] | None = []
        self._lost_while_held = False
        self._fragments: list[bytes] | None = None  # a fragmented text message in progress
        # The fast path (see the module docstring): bytes the protocol has not seen yet.
        self._reading = _RESPONSE
        self._response = bytearray()  # the start of the opening handshake's response
        self._frames = FrameReader(self._message, self._other_frame, protocol.max_message_size)
        self._keepalive = KeepaliveTimer(
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            send_ping=self._send_ping,
            pong_overdue=self._pong_overdue,
            close_overdue=self.abort,
        )
        self._lost = False
        self._lost_waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"ClientSocket({self._protocol.uri.resource_name!r}, {self._protocol.state.name})"

    # ----- public API ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True while messages can be sent (handshake done, no close started)."""
        return self._protocol.state is OPEN and not self._lost

    @property
    def close_code(self) -> int | None:
        """The close code the server sent (1006 when it just dropped); None while open."""
        return self._protocol.close_code

    def send_text(self, data: bytes) -> bool:
        """Send one text message (already UTF-8 encoded); False if the socket is not open."""
        return self._send(self._protocol.send_text, data)

    def _send(self, send: Callable[[bytes], None], data: bytes) -> bool:
        """Queue `data` with the protocol's `send` and write it out; False if not open."""
        if not self.is_open:
            return False
        send(data)
        self._flush()
        return True

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake and silence the callbacks. The server closes TCP; if it
        does not within `close_timeout`, the connection is aborted. See `wait_closed`."""
        self._on_message = _ignore
        self._on_closed = _ignore
        self._held = None
        self._frames.stop()  # what follows goes to the protocol, which is closing
        if self._lost or self._transport is None:
            return
        if self._protocol.state is OPEN:
            self._protocol.send_close(code, reason)
            self._flush()
            self._keepalive.arm_close(connected=self._protocol.state is not CLOSED)
        elif not self._keepalive.closing:
            self._transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is gone (bounded by `close_timeout` after `close()`)."""
        if self._lost:
            return
        if self._lost_waiter is None:
            self._lost_waiter = self._loop.create_future()
        await asyncio.shield(self._lost_waiter)

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        if self._transport is not None and not self._lost:
            self._transport.abort()

    # ----- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._reading is _FRAMES:
            rest = self._frames.feed(data)
            if self._frames.stopped:
                self._hand_over(rest)
        elif self._reading is _RESPONSE:
            self._receive_response(data)
        else:
            self._feed(data)

    def eof_received(self) -> None:
        self._hand_over(self._take_unread())
        self._protocol.receive_eof()
        self._flush()
        # Returning None lets the transport close itself; connection_lost follows.

    def connection_lost(self, exc: Exception | None) -> None:
        self._hand_over(self._take_unread())
        self._protocol.receive_eof()  # idempotent: the protocol is CLOSED from here on
        self._lost = True
        self._keepalive.cancel()
        if self._handshake is not None:
            self._fail_handshake(
                self._protocol.handshake_exc
                or exc
                or ConnectionError("connection closed during the opening handshake")
            )
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)
        if self._held is not None:
            self._lost_while_held = True
            return
        self._report_closed()

    # ----- reading: splitting frames ---------------------------------------------------------

    def _receive_response(self, data: bytes) -> None:
        """Feed the protocol the opening handshake's response, but not the frames after it."""
        buffer = self._response
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        # Without the end of the headers yet, hold back only what may be the start of it.
        split = end + 4 if end >= 0 else max(0, len(buffer) - 3)
        head = bytes(buffer[:split])
        del buffer[:split]
        if head:
            self._feed(head)
        if self._protocol.state is OPEN:
            self._reading = _FRAMES
            self.data_received(self._take_unread())
        elif end >= 0 or self._handshake is None:  # a refusal (and its body), or a failure
            self._hand_over(self._take_unread())

    def _other_frame(self, frame: bytes) -> None:
        """A frame off the fast path, whole: the protocol parses it (and may start closing)."""
        self._feed(frame)
        if self._protocol.state is not OPEN:
            self._frames.stop()

    def _hand_over(self, data: bytes) -> None:
        """From now on, the protocol parses every byte (it fails the connection if it must)."""
        self._reading = _PROTOCOL
        if data:
            self._feed(data)

    def _take_unread(self) -> bytes:
        """What arrived and no one has parsed yet: part of the response, or of a frame."""
        data = bytes(self._response) + self._frames.take_buffer()
        self._response.clear()
        return data

    def _feed(self, data: bytes) -> None:
        """Let the protocol parse `data`, then act on what it parsed."""
        protocol = self._protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._flush()  # pongs, the echo of a close frame, EOF after a failure
        if self._handshake is not None:
            self._check_handshake()
        for event in events:
            if type(event) is Frame:
                self._frame(event)
        if not self._keepalive.closing and protocol.close_expected():
            self._keepalive.arm_close(connected=self._protocol.state is not CLOSED)

    # ----- opening --------------------------------------------------------------------------

    def _check_handshake(self) -> None:
        protocol = self._protocol
        if protocol.handshake_exc is not None:
            self._fail_handshake(protocol.handshake_exc)
            assert self._transport is not None
            self._transport.abort()
        elif protocol.state is OPEN:
            assert self._handshake is not None
            self._handshake.set_result(None)
            self._handshake = None
            self._keepalive.start()

    def _fail_handshake(self, exc: BaseException) -> None:
        waiter, self._handshake = self._handshake, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _release_held(self) -> None:
        """Deliver what arrived before the opener resumed, then go live."""
        held, self._held = self._held, None
        for data in held or ():
            self._deliver(data)
        if self._lost_while_held:
            self._report_closed()

    # ----- reading --------------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is TEXT:
            if frame.fin:
                self._message(frame.data)
            else:
                self._fragments = [frame.data]
        elif opcode is CONT:
            if self._fragments is not None:
                self._fragments.append(frame.data)
                if frame.fin:
                    whole, self._fragments = b"".join(self._fragments), None
                    self._message(whole)
            # else: the rest of a binary message, dropped with its first frame
        elif opcode is PONG:
            self._keepalive.pong(frame.data)
        elif opcode is BINARY:
            logger.debug("dropping a binary message on {!r}", self)
        # PING: the protocol already queued the pong, and data_received flushed it. CLOSE: the
        # protocol queued the echo; data_received then arms the close deadline.

    def _message(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        try:
            self._on_message(data)
        except Exception:
            # A bug downstream must not kill the socket (asyncio would close the transport).
            logger.exception("runtime message handler failed")

    def _report_closed(self) -> None:
        on_closed, self._on_closed = self._on_closed, _ignore
        try:
            on_closed(self)
        except Exception:
            logger.exception("socket close handler failed")

    # ----- writing --------------------------------------------------------------------------

    def _flush(self) -> None:
        data_to_send = self._protocol.data_to_send()
        transport = self._transport
        if not data_to_send or transport is None or transport.is_closing():
            return
        for data in data_to_send:
            if data:
                transport.write(data)
            elif transport.can_write_eof():  # SEND_EOF: half-close
                try:
                    transport.write_eof()
                except Exception:  # uvloop may raise here once the peer is gone
                    transport.close()
            else:
                transport.close()

    # ----- keepalive (see keepalive.py) ---------------------------------------------------

    def _send_ping(self, payload: bytes) -> bool:
        return self._send(self._protocol.send_ping, payload)

    def _pong_overdue(self) -> None:
        logger.warning("{!r}: no pong within {} s, dropping it", self, self._ping_timeout)
        if self._protocol.state is OPEN:
            self._protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()
        assert self._transport is not None
        self._transport.abort()  # the peer is not answering: do not wait for its close


def _ignore(_: object) -> None:
    """The callbacks of a socket its owner has closed."""


async def open_socket(
    url: str,
    headers: Mapping[str, str],
    *,
    on_message: MessageHandler,
    on_closed: Callable[[ClientSocket], None],
    open_timeout: float = 5.0,
    max_size: int = 16 * 1024 * 1024,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    close_timeout: float = 10.0,
) -> ClientSocket:
    """Connect and complete the opening handshake within `open_timeout`.

    Raises `SocketUnavailable` for a bad URL, a refused or failed connection, a refused upgrade
    (e.g. 401, 404, 503) or a timeout. Callbacks start on the loop iteration after the caller
    resumes, so code that runs right after `await open_socket(...)` sees no message before it
    (the first one often arrives in the same packet as the 101 response).
    """
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise SocketUnavailable(str(exc)) from exc
    protocol = ClientProtocol(uri, max_size=max_size)  # no extensions: no compression
    request = protocol.connect()
    request.headers.update({"User-Agent": USER_AGENT, **headers})  # websockets' usual agent
    protocol.send_request(request)
    socket = ClientSocket(
        protocol,
        on_message=on_message,
        on_closed=on_closed,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
    )
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(open_timeout):
            await loop.create_connection(
                lambda: socket, uri.host, uri.port, ssl=True if uri.secure else None
            )
            socket._flush()  # the handshake request
            await cast("asyncio.Future[None]", socket._handshake)  # set: no 101 before the request
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        socket.abort()
        raise SocketUnavailable(f"{url}: {exc!r}") from exc
    except BaseException:
        socket.abort()
        raise
    loop.call_soon(socket._release_held)
    return socket
