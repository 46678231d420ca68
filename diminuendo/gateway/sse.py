"""`SseSubscriber`: a session stream's subscriber for one Server-Sent Events response (REST's
`/api/threads/{id}/events`, and the edges that stream SSE), bounded like a WebSocket connection."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Any

from diminuendo.protocol import events as ev
from diminuendo.protocol.codec import encode_frame
from diminuendo.sanic_ws import wait_drained
from diminuendo.sessions.stream import Frame, ReplayPager

SSE_KEEPALIVE_S = 15.0
SSE_POLL_S = 1.0


class SseSubscriber:
    """A stream subscriber for one SSE response: a buffer bounded like a WebSocket connection's
    send queue — at most `limit` chunks, and fewer than `max_bytes` unsent bytes counting the
    transport's buffer of `protocol` (Sanic's HTTP protocol of the response's connection) —
    that the response loop drains. Over either bound `overflowed` is set and the queue dropped;
    with a `protocol` the stream also ends there: its connection is closed (Sanic flushes what
    it can and aborts after a grace period) and the client resumes with Last-Event-ID. (An edge
    that answers an overflow in its own protocol passes none.)"""

    def __init__(self, limit: int, max_bytes: int | None = None, protocol: Any = None) -> None:
        self.limit = limit
        self.max_bytes = max_bytes if max_bytes is not None else sys.maxsize
        self.items: deque[bytes] = deque()
        self.queued_bytes = 0  # the chunks in `items`
        self.transport_bytes = 0  # the transport's buffer after the last write
        self.overflowed = False
        self.ready = asyncio.Event()
        self.idle_s = 0.0
        self._protocol = protocol

    @property
    def replay_page(self) -> tuple[int, int]:
        """One replay page, in frames and bytes: half of each bound (see `Connection`)."""
        return max(1, self.limit // 2), max(1, self.max_bytes // 2)

    def deliver(self, frame: Frame) -> None:
        self.push(b"id: %d\nevent: %s\ndata: %s\n\n" % (frame.seq, frame.type.encode(), frame.data))

    def push_event(self, event: str, body: ev.ServerFrame) -> None:
        """An SSE event that is not a stream frame (no `id:`, so it moves no resume point)."""
        self.push(b"event: %s\ndata: %s\n\n" % (event.encode(), encode_frame(body)))

    def push(self, chunk: bytes) -> None:
        if self.overflowed:
            return
        if (
            len(self.items) >= self.limit
            or self.queued_bytes + self.transport_bytes >= self.max_bytes
        ):
            self.overflow()
            return
        self.items.append(chunk)
        self.queued_bytes += len(chunk)
        self.ready.set()

    def overflow(self) -> None:
        """End the stream: drop what is queued and close the connection (the response loop
        may be waiting on a client that does not read)."""
        if not self.overflowed:
            self.overflowed = True
            self.items.clear()
            self.queued_bytes = 0
            self.ready.set()
            if self._protocol is not None:
                self._protocol.close()

    async def flush(self, response: Any) -> None:
        while self.items:
            chunk = self.items.popleft()
            self.queued_bytes -= len(chunk)
            await response.send(chunk)
            self.transport_bytes = self._buffered()

    async def drain(self, response: Any) -> None:
        """Send what is buffered, then wait up to SSE_POLL_S for more; after SSE_KEEPALIVE_S
        with nothing to send, a comment line keeps proxies from closing the stream."""
        await self.flush(response)
        self.ready.clear()
        try:
            await asyncio.wait_for(self.ready.wait(), SSE_POLL_S)
            self.idle_s = 0.0
        except TimeoutError:
            self.idle_s += SSE_POLL_S
            if self.idle_s >= SSE_KEEPALIVE_S:
                await response.send(b": keep-alive\n\n")
                self.idle_s = 0.0

    async def replay_page_of(self, pager: ReplayPager, response: Any) -> None:
        """The next page of a long replay (`SessionStream.attach_page`), once the client has
        taken the last one. A page with a gap means the window moved past this client while
        it read: too slow, the stream ends."""
        await self.flush(response)
        if self._protocol is not None:
            await wait_drained(self._protocol)
        self.transport_bytes = self._buffered()
        page = pager.next_page()
        if page.gap:
            self.overflow()
            return
        for frame in page.frames:
            self.deliver(frame)

    def _buffered(self) -> int:
        transport = self._protocol.transport if self._protocol is not None else None
        return transport.get_write_buffer_size() if transport is not None else 0
