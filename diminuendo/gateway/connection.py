"""One client WebSocket: how frames reach it, in order, and the slow-consumer policy.

Every frame for a client — replies and stream events alike — goes through `Connection`, so the
client sees them in the order they were handed in, and a slow client only ever fills its own
queue: when it holds more than `send_queue_max` frames, or its unsent bytes (queued frames and
the transport's write buffer) reach `send_buffer_bytes`, the connection is closed with 4008
instead of slowing the session's publisher or the other subscribers, or growing the process
(PROTOCOL.md §7, §13). A connection so holds at most the budget plus one frame.

While the socket keeps up, a frame is written in the caller's own step (`sanic_ws.write_text`):
no task switch, lock, `Event` or byte count per frame. Frames wait in the queue only while the
transport pushes back or a Sanic writer is mid-write, and a writer task exists for that stretch
alone, so an idle connection owns no task. The budget costs an int add per queued frame and one
look at the transport's buffer per stretch of backpressure (and per burst the writer writes).

A replay longer than the queue goes out in pages as the socket drains (`replay`), never
queued whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from loguru import logger
from sanic.server.websockets.impl import WebsocketImplProtocol

from diminuendo.auth.identity import Identity
from diminuendo.protocol.codec import encode_frame
from diminuendo.sanic_ws import (
    is_open,
    last_heard,
    unsent_bytes,
    wait_writable,
    writable,
    write_ping,
    write_queued,
    write_text,
)
from diminuendo.sessions.stream import Frame, ReplayPager

CLOSE_SLOW_CONSUMER = 4008
_decoder = msgspec.json.Decoder()


class Connection:
    __slots__ = (
        "_on_slow",
        "_queue",
        "_queued_bytes",
        "_send_buffer_bytes",
        "_send_queue_max",
        "_transport_bytes",
        "_turn_request_ids",
        "_writer",
        "client_id",
        "closed",
        "identity",
        "ip",
        "joined",
        "ws",
    )

    def __init__(
        self,
        ws: WebsocketImplProtocol,
        *,
        send_queue_max: int,
        send_buffer_bytes: int,
        ip: str,
        on_slow: Callable[[], None] = lambda: None,
    ) -> None:
        self.ws = ws
        self.client_id = str(uuid.uuid4())
        self.ip = ip
        self.identity: Identity | None = None
        self.joined: set[str] = set()
        self.closed = False
        self._queue: deque[bytes] = deque()
        self._send_queue_max = send_queue_max
        self._send_buffer_bytes = send_buffer_bytes
        self._queued_bytes = 0  # the frames in `_queue`
        self._transport_bytes = 0  # the transport's buffer when last looked at
        self._on_slow = on_slow
        self._writer: asyncio.Task[None] | None = None
        # `id`s to stamp on this client's copy of `turn_started`: turnId → request id.
        self._turn_request_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Connection({self.client_id})"

    # Stream subscriber protocol (sessions.stream.Subscriber): must never block.
    def deliver(self, frame: Frame) -> None:
        data = frame.data
        if self._turn_request_ids and frame.type == "turn_started":
            data = self._stamp_turn_reply(data)
        self._enqueue(data)

    def send(self, message: dict[str, Any]) -> None:
        """Send a reply or connection-level frame."""
        self._enqueue(encode_frame(message))

    def send_encoded(self, data: bytes) -> None:
        """Send a frame already encoded once for many connections (broadcasts, heartbeats)."""
        self._enqueue(data)

    def expect_turn_reply(self, turn_id: str, request_id: str) -> None:
        """Mark this client's `turn_started` for `turn_id` as the reply to its `run_turn`."""
        self._turn_request_ids[turn_id] = request_id

    def _stamp_turn_reply(self, data: bytes) -> bytes:
        event = _decoder.decode(data)
        request_id = self._turn_request_ids.pop(event.get("turnId"), None)
        if request_id is None:
            return data
        event["id"] = request_id
        return encode_frame(event)

    def _enqueue(self, data: bytes) -> None:
        if self.closed:
            return
        queue = self._queue
        if not queue:
            if writable(self.ws):
                write_text(self.ws, data)
                return
            self._transport_bytes = unsent_bytes(self.ws)  # backpressure starts: look once
        if (
            len(queue) >= self._send_queue_max
            or self._queued_bytes + self._transport_bytes >= self._send_buffer_bytes
        ):
            logger.warning(
                "closing slow consumer {} ({} frames, {} bytes unsent)",
                self.client_id,
                len(queue),
                self._queued_bytes + self._transport_bytes,
            )
            self._on_slow()
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        queue.append(data)
        self._queued_bytes += len(data)
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name=f"ws-writer:{self.client_id}")

    async def _drain(self) -> None:
        """Write the queued frames as the transport takes them; ends when the queue is empty."""
        ws, queue = self.ws, self._queue
        try:
            while queue and not self.closed and is_open(ws):
                await wait_writable(ws)
                # The frames moved from the queue to the transport: still unsent.
                self._queued_bytes -= write_queued(ws, queue)
                self._transport_bytes = unsent_bytes(ws)
        except Exception as exc:  # the socket went away under us
            logger.debug("writer for {} stopped: {}", self.client_id, type(exc).__name__)
            self.closed = True
        finally:
            self._writer = None

    async def drained(self) -> bool:
        """Wait until nothing is queued and the transport is below its low-water mark; False
        (at once) if the connection is closed or closes meanwhile."""
        ws = self.ws
        while not self.closed and is_open(ws):
            if not self._queue and writable(ws):
                return True
            writer = self._writer
            if writer is not None:
                await asyncio.wait([writer])  # it ends when the queue is empty (or on close)
            else:
                await wait_writable(ws)
        return False

    @property
    def replay_page(self) -> tuple[int, int]:
        """One replay page for this connection, in frames and bytes: half its queue and half its
        byte budget, so a page fits beside the live frames of the client's other sessions."""
        return max(1, self._send_queue_max // 2), max(1, self._send_buffer_bytes // 2)

    async def replay(self, pager: ReplayPager) -> None:
        """Send the rest of a paged replay (`SessionStream.attach_page`), one page each time the
        socket has drained, until the pager attaches this connection to live delivery. A page
        with a gap means the session's window moved past this client while it drained: it is
        closed as a slow consumer (it rejoins and learns `gap: true`)."""
        while not pager.attached:
            if not await self.drained():
                return
            page = pager.next_page()
            if page.gap:
                logger.warning("closing slow consumer {} (fell out of the replay window)", self)
                self._on_slow()
                self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
                return
            for frame in page.frames:
                self.deliver(frame)

    def heard_at(self) -> float:
        """When the client last sent anything (a frame, a pong): `time.monotonic()` seconds."""
        return last_heard(self.ws)

    def ping(self) -> None:
        """A WebSocket ping (empty payload): a live client answers it with a pong, and that pong
        is all `heard_at` needs. Skipped while frames queue: the socket is busy, not idle."""
        if not self.closed and not self._queue and writable(self.ws):
            write_ping(self.ws)

    def drop(self, code: int, reason: str) -> None:
        """Close without waiting for the client's half of the closing handshake (it is silent)."""
        if self.closed:
            return
        self._discard()
        self.ws.fail_connection(code, reason)

    def close(self, code: int = 1000, reason: str = "") -> asyncio.Task[None] | None:
        """Close from synchronous code (e.g. `deliver`): drop the queue, close in the background.
        Returns the closing task (None if already closed) for callers that want to wait."""
        if self.closed:
            return None
        self._discard()
        return asyncio.get_running_loop().create_task(self.ws.close(code, reason))

    def _discard(self) -> None:
        self.closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self._cancel_writer()

    async def aclose(self) -> None:
        """Stop the writer; called once when the handler ends."""
        self.closed = True
        writer = self._writer
        self._cancel_writer()
        if writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def _cancel_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
