"""The fast path of `ClientSocket.data_received` (upstreams/runtime_socket.py) without a network:
a socket fed a scripted byte stream cut into every kind of chunk, checked against what websockets'
protocol would have done. (Its header parser, `wire.frame_bounds`, is tested in test_wire.py.)"""

from __future__ import annotations

import random

import pytest
from websockets.client import ClientProtocol
from websockets.frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, Close, CloseCode, Frame
from websockets.http11 import Request
from websockets.protocol import CLOSING
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from diminuendo.upstreams.runtime_socket import ClientSocket

# ----- a socket fed by hand ---------------------------------------------------------------------


class Transport:
    """Records what the socket writes; enough of `asyncio.Transport` for `ClientSocket`."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


class Harness:
    """A `ClientSocket` and a server `ServerProtocol` that writes its frames and reads its replies.
    Every `receive_data` call the client's protocol gets is recorded in `fed`."""

    def __init__(self, max_size: int = 1 << 20) -> None:
        self.messages: list[bytes] = []
        self.closed = 0
        protocol = ClientProtocol(parse_uri("ws://127.0.0.1/agent/inst"), max_size=max_size)
        protocol.send_request(protocol.connect())
        self.fed: list[bytes] = []
        receive_data = protocol.receive_data

        def recording(data: bytes) -> None:
            self.fed.append(bytes(data))
            receive_data(data)

        protocol.receive_data = recording  # type: ignore[method-assign]
        self.protocol = protocol
        self.socket = ClientSocket(
            protocol,
            on_message=self.messages.append,
            on_closed=self._on_closed,
            ping_interval=None,
            ping_timeout=None,
            close_timeout=5.0,
        )
        self.transport = Transport()
        self.socket.connection_made(self.transport)  # type: ignore[arg-type]
        self.socket._flush()  # the request
        self.server = ServerProtocol(max_size=None)
        self.server.receive_data(b"".join(self.transport.writes))
        self.transport.writes.clear()
        (request,) = self.server.events_received()
        assert isinstance(request, Request)
        self.server.send_response(self.server.accept(request))
        self.handshake = b"".join(self.server.data_to_send())

    def _on_closed(self, socket: ClientSocket) -> None:
        self.closed += 1

    def feed(self, data: bytes, cuts: list[int]) -> None:
        """`data_received` for `data` cut at `cuts` (ascending offsets)."""
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            if end > start:
                self.socket.data_received(data[start:end])
        if self.socket._handshake is None and self.socket._held is not None:
            self.socket._release_held()  # as `open_socket` does once the opener has resumed

    def replies(self) -> list[Frame]:
        """The frames the client wrote (pongs, close), parsed by the server side."""
        self.server.receive_data(b"".join(self.transport.writes))
        self.transport.writes.clear()
        return [event for event in self.server.events_received() if isinstance(event, Frame)]

    def fed_after_handshake(self) -> list[bytes]:
        """What the protocol was fed after the 101 response (which must end a call of its own)."""
        assert b"".join(self.fed).startswith(self.handshake)
        seen = 0
        for index, chunk in enumerate(self.fed):
            seen += len(chunk)
            if seen == len(self.handshake):
                return self.fed[index + 1 :]
        raise AssertionError("the protocol got the 101 response together with frames")


def text(data: bytes, fin: bool = True) -> bytes:
    return Frame(TEXT, data, fin=fin).serialize(mask=False)


def cont(data: bytes, fin: bool) -> bytes:
    return Frame(CONT, data, fin=fin).serialize(mask=False)


def ping(data: bytes) -> bytes:
    return Frame(PING, data).serialize(mask=False)


def chunkings(length: int) -> list[list[int]]:
    """Ways to cut a stream: whole, byte by byte, and a few seeded random cuttings."""
    rng = random.Random(6455)
    ways: list[list[int]] = [[], list(range(1, length))]
    for _ in range(20):
        ways.append(sorted(rng.sample(range(1, length), rng.randint(1, min(length - 1, 60)))))
    return ways


STREAM = [
    text(b"first"),
    text(b""),
    text(b"m" * 126),  # 16-bit length
    ping(b"p1"),
    text(b"after the ping"),
    text(b"frag-", fin=False),
    ping(b"p2"),
    cont(b"ment", fin=False),
    cont(b"ed", fin=True),
    Frame(BINARY, b"\x00\x01").serialize(mask=False),
    text(b"L" * 70_000),  # 64-bit length
    Frame(PONG, b"unsolicited").serialize(mask=False),
    text(b"last"),
]
EXPECTED = [b"first", b"", b"m" * 126, b"after the ping", b"frag-mented", b"L" * 70_000, b"last"]
# The frames the protocol must see, each on its own; the text frames take the fast path.
TO_PROTOCOL = [STREAM[i] for i in (3, 5, 6, 7, 8, 9, 11)]


async def test_frames_arrive_in_order_however_the_stream_is_cut() -> None:
    length = len(Harness().handshake) + len(b"".join(STREAM))
    for handshake_alone in (True, False):
        for cuts in chunkings(length):
            harness = Harness()
            stream = harness.handshake + b"".join(STREAM)
            assert len(stream) == length
            if handshake_alone:  # otherwise the frames may share reads with the 101
                cuts = sorted({len(harness.handshake), *cuts})
            harness.feed(stream, cuts)
            assert harness.messages == EXPECTED, cuts
            assert harness.fed_after_handshake() == TO_PROTOCOL, cuts
            assert [(f.opcode, f.data) for f in harness.replies()] == [
                (PONG, b"p1"),
                (PONG, b"p2"),
            ]
            assert harness.socket.is_open


async def test_messages_wait_for_the_opener_in_order() -> None:
    harness = Harness()
    harness.socket.data_received(harness.handshake + text(b"a") + ping(b"p") + text(b"b"))
    assert harness.messages == []
    harness.socket._release_held()
    harness.socket.data_received(text(b"c"))
    assert harness.messages == [b"a", b"b", b"c"]


async def test_a_close_frame_closes_and_later_frames_are_discarded() -> None:
    harness = Harness()
    close = Frame(CLOSE, Close(4000, "bye").serialize()).serialize(mask=False)
    harness.feed(harness.handshake + text(b"a") + close + text(b"after close"), [])
    assert harness.messages == [b"a"]
    assert harness.protocol.state is CLOSING
    ((opcode, data),) = [(f.opcode, f.data) for f in harness.replies()]
    assert opcode is CLOSE and Close.parse(data).code == 4000
    harness.socket.eof_received()
    harness.socket.connection_lost(None)
    assert harness.socket.close_code == 4000
    assert harness.closed == 1


BAD_FRAMES = [
    ("masked", Frame(TEXT, b"masked").serialize(mask=True), CloseCode.PROTOCOL_ERROR),
    ("rsv1", bytes([0xC1, 1]) + b"x", CloseCode.PROTOCOL_ERROR),
    ("oversized", text(b"o" * 1001), CloseCode.MESSAGE_TOO_BIG),
    ("huge header", bytes([0x81, 127]) + (2**40).to_bytes(8, "big"), CloseCode.MESSAGE_TOO_BIG),
    ("bad opcode", bytes([0x83, 0]), CloseCode.PROTOCOL_ERROR),
    ("stray continuation", cont(b"x", fin=True), CloseCode.PROTOCOL_ERROR),
    ("text inside a fragmented one", text(b"a", fin=False) + text(b"b"), CloseCode.PROTOCOL_ERROR),
    ("oversized fragments", text(b"o" * 600, fin=False) + cont(b"o" * 600, True), 1009),
]


@pytest.mark.parametrize(
    ("bad", "code"), [case[1:] for case in BAD_FRAMES], ids=[c[0] for c in BAD_FRAMES]
)
async def test_a_bad_frame_fails_the_connection(bad: bytes, code: int) -> None:
    for cuts in ([], [1], [len(Harness().handshake) + 1]):
        harness = Harness(max_size=1000)
        stream = harness.handshake + text(b"before") + bad + text(b"after")
        harness.feed(stream, cuts)
        assert harness.messages == [b"before"]
        assert harness.protocol.state is CLOSING
        assert not harness.socket.is_open
        replies = harness.replies()
        assert [f.opcode for f in replies] == [CLOSE]
        assert Close.parse(replies[0].data).code == code


async def test_eof_in_the_middle_of_a_frame_is_an_abnormal_closure() -> None:
    harness = Harness()
    harness.feed(harness.handshake + text(b"whole") + text(b"cut short")[:5], [])
    assert harness.messages == [b"whole"]
    harness.socket.eof_received()
    harness.socket.connection_lost(None)
    assert harness.socket.close_code == CloseCode.ABNORMAL_CLOSURE
    assert harness.closed == 1
    assert b"".join(harness.fed).endswith(text(b"cut short")[:5]), "the protocol saw every byte"


async def test_a_refused_upgrade_still_fails_the_handshake() -> None:
    harness = Harness()
    waiter = harness.socket._handshake
    assert waiter is not None
    response = ServerProtocol().reject(401, "no\n").serialize()
    harness.socket.data_received(response[:-2])  # the headers, and part of the body
    assert not waiter.done()
    harness.socket.data_received(response[-2:])
    assert harness.protocol.handshake_exc is not None
    assert isinstance(waiter.exception(), type(harness.protocol.handshake_exc))
    assert harness.transport.aborted
