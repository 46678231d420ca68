"""One client WebSocket: how frames reach it, in order, and the slow-consumer policy.

Every frame for a client — replies and stream events alike — goes through `Connection`, so the
client sees them in the order they were handed in, and a slow client only ever fills its own
queue: when it holds more than `send_queue_max` frames the connection is closed with 4008
instead of slowing the session's publisher or the other subscribers (PROTOCOL.md §7).

While the socket keeps up, a frame is written in the caller's own step (`sanic_ws.write_text`):
no task switch, lock or `Event` per frame. Frames wait in the queue only while the transport
pushes back or a Sanic writer is mid-write, and a writer task exists for that stretch alone, so
an idle connection owns no task.
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
from diminuendo.sanic_ws import is_open, wait_writable, writable, write_ping, write_text
from diminuendo.sessions.stream import Frame

CLOSE_SLOW_CONSUMER = 4008
_decoder = msgspec.json.Decoder()


class Connection:
    __slots__ = (
        "_on_slow",
        "_queue",
        "_send_queue_max",
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
        if not queue and writable(self.ws):
            write_text(self.ws, data)
            return
        if len(queue) >= self._send_queue_max:
            logger.warning("closing slow consumer {} ({} queued)", self.client_id, len(queue))
            self._on_slow()
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        queue.append(data)
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name=f"ws-writer:{self.client_id}")

    async def _drain(self) -> None:
        """Write the queued frames as the transport takes them; ends when the queue is empty."""
        ws, queue = self.ws, self._queue
        try:
            while queue and not self.closed and is_open(ws):
                await wait_writable(ws)
                while queue and writable(ws):
                    write_text(ws, queue.popleft())
        except Exception as exc:  # the socket went away under us
            logger.debug("writer for {} stopped: {}", self.client_id, type(exc).__name__)
            self.closed = True
        finally:
            self._writer = None

    def heard_at(self) -> float:
        """When the client last sent anything (a frame, a pong): `time.monotonic()` seconds."""
        return self.ws.io_proto.last_heard

    def ping(self) -> None:
        """A WebSocket ping (empty payload): a live client answers it with a pong, and that pong
        is all `heard_at` needs. Skipped while frames queue: the socket is busy, not idle."""
        if not self.closed and not self._queue and writable(self.ws):
            write_ping(self.ws)

    def drop(self, code: int, reason: str) -> None:
        """Close without waiting for the client's half of the closing handshake (it is silent)."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._cancel_writer()
        self.ws.fail_connection(code, reason)

    def close(self, code: int = 1000, reason: str = "") -> asyncio.Task[None] | None:
        """Close from synchronous code (e.g. `deliver`): drop the queue, close in the background.
        Returns the closing task (None if already closed) for callers that want to wait."""
        if self.closed:
            return None
        self.closed = True
        self._queue.clear()
        self._cancel_writer()
        return asyncio.get_running_loop().create_task(self.ws.close(code, reason))

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
