"""One client WebSocket: its bounded send queue, its writer task, and slow-consumer policy.

Every frame for a client — replies and stream events alike — goes through `Connection`'s queue,
so the client sees them in the order they were enqueued, and a slow client only ever fills its
own queue: when it holds more than `send_queue_max` frames the connection is closed with 4008
instead of slowing the session's publisher or the other subscribers (PROTOCOL.md §7).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from typing import Any

import msgspec
from loguru import logger
from sanic.server.websockets.impl import WebsocketImplProtocol

from diminuendo.auth.identity import Identity
from diminuendo.protocol.codec import encode_frame
from diminuendo.sessions.stream import Frame

CLOSE_SLOW_CONSUMER = 4008
_decoder = msgspec.json.Decoder()


class Connection:
    def __init__(self, ws: WebsocketImplProtocol, *, send_queue_max: int, ip: str) -> None:
        self.ws = ws
        self.client_id = str(uuid.uuid4())
        self.ip = ip
        self.identity: Identity | None = None
        self.joined: set[str] = set()
        self.closed = False
        self._queue: deque[str] = deque()
        self._send_queue_max = send_queue_max
        self._ready = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer:{self.client_id}")
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
        """Queue a reply or connection-level frame."""
        self._enqueue(encode_frame(message))

    def send_encoded(self, data: str) -> None:
        """Queue a frame already encoded once for many connections (broadcasts, heartbeats)."""
        self._enqueue(data)

    def expect_turn_reply(self, turn_id: str, request_id: str) -> None:
        """Mark this client's `turn_started` for `turn_id` as the reply to its `run_turn`."""
        self._turn_request_ids[turn_id] = request_id

    def _stamp_turn_reply(self, data: str) -> str:
        event = _decoder.decode(data)
        request_id = self._turn_request_ids.pop(event.get("turnId"), None)
        if request_id is None:
            return data
        event["id"] = request_id
        return encode_frame(event)

    def _enqueue(self, data: str) -> None:
        if self.closed:
            return
        if len(self._queue) >= self._send_queue_max:
            logger.warning(
                "closing slow consumer {} ({} frames queued)", self.client_id, len(self._queue)
            )
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        self._queue.append(data)
        self._ready.set()

    async def _write_loop(self) -> None:
        queue = self._queue
        try:
            while True:
                await self._ready.wait()
                while queue:
                    await self.ws.send(queue.popleft())
                self._ready.clear()
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the socket went away under us
            logger.debug("writer for {} stopped: {}", self.client_id, type(exc).__name__)
            self.closed = True

    def close(self, code: int = 1000, reason: str = "") -> asyncio.Task[None] | None:
        """Close from synchronous code (e.g. `deliver`): drop the queue, close in the background.
        Returns the closing task (None if already closed) for callers that want to wait."""
        if self.closed:
            return None
        self.closed = True
        self._queue.clear()
        self._writer.cancel()
        return asyncio.get_running_loop().create_task(self.ws.close(code, reason))

    async def aclose(self) -> None:
        """Stop the writer; called once when the handler ends."""
        self.closed = True
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
