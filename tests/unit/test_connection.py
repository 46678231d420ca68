"""The send side of a client connection (diminuendo.gateway.connection): direct writes while
the socket keeps up, the frame cap and the byte budget under backpressure, draining, and paged
replays. The WebSocket is a stand-in with the few attributes `sanic_ws` reads; the integration
and security tests run the same code over real sockets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from websockets.protocol import OPEN, State

from diminuendo.gateway.connection import CLOSE_SLOW_CONSUMER, Connection
from diminuendo.sessions.stream import ReplayPager, SessionStream
from diminuendo.wire import frame_header


@dataclass
class Transport:
    buffered: int = 0  # bytes written that the "client" has not taken
    written: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


class Io:
    def __init__(self) -> None:
        self.transport = Transport()
        self._can_write = asyncio.Event()
        self._can_write.set()


@dataclass
class WsProto:
    state: State = OPEN


class Ws:
    """What `sanic_ws` and `Connection` use of Sanic's `WebsocketImplProtocol`."""

    def __init__(self) -> None:
        self.io_proto = Io()
        self.ws_proto = WsProto()
        self.conn_mutex = asyncio.Lock()
        self.closed_with: int | None = None

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = code
        self.ws_proto.state = State.CLOSED

    def push_back(self) -> None:
        """The transport went over its high-water mark."""
        self.io_proto._can_write.clear()

    def take(self) -> None:
        """The client read everything: the buffer empties and writing resumes."""
        self.io_proto.transport.buffered = 0
        self.io_proto._can_write.set()


def connection(ws: Ws, queue_max: int = 100, budget: int = 1000) -> Connection:
    return Connection(ws, send_queue_max=queue_max, send_buffer_bytes=budget, ip="127.0.0.1")  # type: ignore[arg-type]


def payloads(ws: Ws) -> list[bytes]:
    return [chunk[len(frame_header(0)) :] for chunk in ws.io_proto.transport.written]


async def test_frames_go_straight_to_the_transport_while_it_keeps_up() -> None:
    ws = Ws()
    conn = connection(ws)
    for n in range(3):
        conn.send_encoded(b"%d" % n)
    assert payloads(ws) == [b"0", b"1", b"2"]
    assert conn._writer is None  # no task for a connection that keeps up


async def test_the_byte_budget_counts_the_transport_buffer_and_closes_with_4008() -> None:
    ws = Ws()
    slow = []
    conn = Connection(
        ws,  # type: ignore[arg-type]
        send_queue_max=100,
        send_buffer_bytes=1000,
        ip="127.0.0.1",
        on_slow=lambda: slow.append(1),
    )
    conn.send_encoded(b"x" * 600)  # written: the transport now holds 602 bytes
    ws.push_back()
    conn.send_encoded(b"y" * 300)  # queued behind 602 unsent: 902 unsent now
    conn.send_encoded(b"z" * 200)  # 902 is under the budget: queued, 1,102 unsent now
    assert not conn.closed
    conn.send_encoded(b"w")  # over the budget before this frame: closed
    await asyncio.sleep(0)
    assert conn.closed and ws.closed_with == CLOSE_SLOW_CONSUMER and slow == [1]


async def test_the_frame_cap_still_applies() -> None:
    ws = Ws()
    conn = connection(ws, queue_max=3, budget=10**9)
    ws.push_back()
    for _ in range(3):
        conn.send_encoded(b"f")
    assert not conn.closed
    conn.send_encoded(b"f")
    await asyncio.sleep(0)
    assert conn.closed and ws.closed_with == CLOSE_SLOW_CONSUMER


async def test_a_client_that_catches_up_frees_its_budget() -> None:
    ws = Ws()
    conn = connection(ws, budget=1000)
    ws.push_back()
    for _ in range(9):
        conn.send_encoded(b"a" * 100)  # 900 queued
    ws.take()
    assert await asyncio.wait_for(conn.drained(), 1)
    assert len(payloads(ws)) == 9
    ws.take()
    ws.push_back()
    for _ in range(9):
        conn.send_encoded(b"b" * 100)  # 900 queued again: still under the budget
    assert not conn.closed


async def test_drained_is_false_once_closed() -> None:
    ws = Ws()
    conn = connection(ws)
    ws.push_back()
    conn.send_encoded(b"q")
    waiting = asyncio.create_task(conn.drained())
    await asyncio.sleep(0)
    conn.close()
    assert await asyncio.wait_for(waiting, 1) is False


async def test_a_replay_goes_out_a_page_at_a_time_as_the_socket_drains() -> None:
    ws = Ws()
    conn = connection(ws, queue_max=100, budget=10_000)
    stream = SessionStream("s", "e")
    for n in range(10):
        stream.publish({"type": "text_delta", "text": str(n)}, n)
    pager = ReplayPager(stream, conn, 0, None, max_frames=4, max_bytes=10_000)
    for frame in pager.next_page().frames:
        conn.deliver(frame)
    ws.push_back()  # the client stops reading
    pump = asyncio.create_task(conn.replay(pager))
    await asyncio.sleep(0.01)
    assert len(payloads(ws)) == 4 and not pager.attached  # waits for the client
    stream.publish({"type": "text_delta", "text": "live"}, 10)
    ws.take()
    await asyncio.wait_for(pump, 1)
    assert pager.attached
    stream.publish({"type": "text_delta", "text": "after"}, 11)
    seqs = [int(p.split(b'"seq":')[1].split(b",")[0]) for p in payloads(ws)]
    assert seqs == list(range(1, 13))


async def test_a_replay_overtaken_by_the_window_closes_the_reader() -> None:
    ws = Ws()
    conn = connection(ws)
    stream = SessionStream("s", "e", max_events=4)
    for n in range(4):
        stream.publish({"type": "x"}, n)
    pager = ReplayPager(stream, conn, 0, None, max_frames=2, max_bytes=10_000)
    for frame in pager.next_page().frames:
        conn.deliver(frame)
    for n in range(4):
        stream.publish({"type": "x"}, n)  # frames 3 and 4 leave the window unsent
    await asyncio.wait_for(conn.replay(pager), 1)
    await asyncio.sleep(0)
    assert ws.closed_with == CLOSE_SLOW_CONSUMER and not pager.attached
