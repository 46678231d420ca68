"""The keepalive and close deadline of one client socket (`runtime_socket.ClientSocket`), on one
`loop.call_at` timer instead of a task per socket.

The timer is always one of: "send the next ping", "the pong is late", or, once the closing
handshake has started, "give up waiting for the server to close". A pong that does not come
within `ping_timeout` reports the peer dead, so a silent peer is noticed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class KeepaliveTimer:
    """The socket tells it what happened (`start`, `pong`, `arm_close`, `cancel`); it calls
    `send_ping(payload)` (False: the socket can no longer send, stop pinging),
    `pong_overdue()` and `close_overdue()` back."""

    __slots__ = (
        "_close_overdue",
        "_close_timeout",
        "_loop",
        "_ping_interval",
        "_ping_payload",
        "_ping_sent_at",
        "_ping_timeout",
        "_pings",
        "_pong_overdue",
        "_send_ping",
        "_timer",
        "closing",
    )

    def __init__(
        self,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
        send_ping: Callable[[bytes], bool],
        pong_overdue: Callable[[], None],
        close_overdue: Callable[[], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._send_ping = send_ping
        self._pong_overdue = pong_overdue
        self._close_overdue = close_overdue
        self._timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._ping_sent_at = 0.0
        self._pings = 0
        self.closing = False  # the close deadline is armed: no more pings

    def start(self) -> None:
        """The socket opened: the first ping goes out `ping_interval` from now."""
        self._schedule_ping(self._loop.time())

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pong(self, payload: bytes) -> None:
        """A pong arrived; only the answer to the last ping counts."""
        if self._ping_payload is None or payload != self._ping_payload:
            return  # unsolicited, or an answer to an older ping
        self._ping_payload = None
        self.cancel()
        assert self._ping_interval is not None  # a ping was sent
        # Ping every `ping_interval` from the last ping, or at once if the pong took longer.
        self._schedule_ping(max(self._ping_sent_at, self._loop.time() - self._ping_interval))

    def arm_close(self, connected: bool) -> None:
        """The closing handshake started: the server should close TCP within `close_timeout`
        (no deadline when it already has: `connected` is False)."""
        self.closing = True
        self.cancel()
        if connected:
            self._timer = self._loop.call_later(self._close_timeout, self._close_overdue)

    def _schedule_ping(self, after: float) -> None:
        if self._ping_interval is not None and not self.closing:
            self._timer = self._loop.call_at(after + self._ping_interval, self._ping)

    def _ping(self) -> None:
        self._timer = None
        self._pings += 1
        payload = self._pings.to_bytes(4, "big")
        self._ping_payload = payload
        self._ping_sent_at = self._loop.time()
        if not self._send_ping(payload):
            self._ping_payload = None
            return
        if self._ping_timeout is None:
            self._ping_payload = None
            self._schedule_ping(self._ping_sent_at)
        else:
            self._timer = self._loop.call_later(self._ping_timeout, self._overdue)

    def _overdue(self) -> None:
        self._timer = None
        self._pong_overdue()
