"""A scriptable WebSocket server for socket-level tests, built on websockets' Sans-I/O
`ServerProtocol` so a test controls exactly what goes on the wire: the greeting written in the
same packet as the 101 response, fragments, pings, closes, drops and a peer that goes deaf.
`write` and `trickle` put frames built with `frame` on the wire as they are, bad ones included."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from websockets.frames import CLOSE, PING, PONG, TEXT, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol


def frame(opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool = False) -> bytes:
    """One frame as bytes, for `write` (a server's frames are unmasked; `mask` breaks that)."""
    return Frame(opcode, data, fin=fin).serialize(mask=mask)


class PeerConnection(asyncio.Protocol):
    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.protocol = ServerProtocol(max_size=None)
        self.transport: asyncio.Transport | None = None
        self.texts: list[bytes] = []
        self.pings = 0
        self.pongs: list[bytes] = []
        self.close_code: int | None = None
        self.deaf = False
        self.changed = asyncio.Event()
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.deaf:
            return
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            else:
                self._frame(event)
        self.flush()
        self.changed.set()

    def _handshake(self, request: Request) -> None:
        index = len(self.peer.connections)
        self.peer.requests.append(request)
        if self.peer.refuse is not None:
            self.protocol.send_response(self.protocol.reject(self.peer.refuse, "refused\n"))
            return
        self.protocol.send_response(self.protocol.accept(request))
        for message in self.peer.greeting(index):
            self.protocol.send_text(message)
        self.flush()  # the 101 and the greeting in one write, so one packet on loopback
        self.peer.connections.append(self)
        self.peer.arrived.set()
        if self.peer.deaf:
            self.deaf = True

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is TEXT:
            self.texts.append(bytes(frame.data))
        elif frame.opcode is PING:
            self.pings += 1
        elif frame.opcode is PONG:
            self.pongs.append(bytes(frame.data))
        elif frame.opcode is CLOSE:
            self.close_code = self.protocol.close_rcvd.code if self.protocol.close_rcvd else None

    def flush(self) -> None:
        assert self.transport is not None
        chunks = self.protocol.data_to_send()
        data = b"".join(chunks)
        if data and not self.transport.is_closing():
            self.transport.write(data)
        if b"" in chunks:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.changed.set()

    async def until(self, check: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    def send_fragments(self, pieces: list[bytes]) -> None:
        self.protocol.send_text(pieces[0], fin=False)
        for piece in pieces[1:-1]:
            self.protocol.send_continuation(piece, fin=False)
        self.protocol.send_continuation(pieces[-1], fin=True)
        self.flush()

    def send_text(self, message: bytes) -> None:
        self.protocol.send_text(message)
        self.flush()

    def ping(self, payload: bytes) -> None:
        self.protocol.send_ping(payload)
        self.flush()

    def close(self, code: int, reason: str = "") -> None:
        self.protocol.send_close(code, reason)
        self.flush()

    def write(self, data: bytes) -> None:
        """Raw bytes in one TCP write, past the protocol (which keeps answering the client)."""
        assert self.transport is not None
        self.transport.write(data)

    async def trickle(self, data: bytes, pause: float = 0.001) -> None:
        """Raw bytes one per TCP write, so that the client reads them in many pieces."""
        for index in range(len(data)):
            self.write(data[index : index + 1])
            await asyncio.sleep(pause)

    def drop(self) -> None:
        assert self.transport is not None
        self.transport.abort()


class Peer:
    """A server on 127.0.0.1; `connections` holds the accepted ones in order."""

    def __init__(
        self,
        *,
        greeting: Callable[[int], list[bytes]] = lambda index: [],
        refuse: int | None = None,
        deaf: bool = False,
    ) -> None:
        self.greeting = greeting
        self.refuse = refuse
        self.deaf = deaf
        self.connections: list[PeerConnection] = []
        self.requests: list[Request] = []
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Peer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: PeerConnection(self), "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.abort()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/agent/inst_peer"

    async def connection(self, index: int, timeout: float = 3.0) -> PeerConnection:
        async with asyncio.timeout(timeout):
            while len(self.connections) <= index:
                self.arrived.clear()
                await self.arrived.wait()
        return self.connections[index]
