"""Podium's native runtime WebSocket (UPSTREAMS.md §1): one per active session.

`RuntimeConnection` hides drops: when the socket falls mid-turn it reconnects with backoff for up
to `reconnect_window_s` (Podium buffers what the agent emitted meanwhile, so nothing is lost), and
only when the instance is gone or the window is exhausted does it report `on_lost` so the session
can end the turn with `turn_error`. Opening it waits for Podium's `runtime.attached` hello, so a
session knows whether its runtime is busy before it shows `ready`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.upstreams.resilience import backoff_delay
from diminuendo.upstreams.runtime_socket import ClientSocket, SocketUnavailable, open_socket

if TYPE_CHECKING:
    from diminuendo.upstreams.podium import PodiumClient

__all__ = ["RuntimeConnection", "parse_runtime_frame", "running_turn"]

OPEN_TIMEOUT_S = 5.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A runtime socket that leaves a ping unanswered this long is dead (half-open TCP, hung Podium).
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
# First frame on every runtime socket: which turn the runtime is running (see docs/DECISIONS.md).
ATTACHED = "runtime.attached"
# How long opening a runtime socket waits for that hello: the session must not show `ready`
# before it knows whether the runtime is busy (a `run_turn` would be accepted beside a running
# turn). A Podium that never sends it costs this once: `PodiumClient.greets` stops the wait
# until a hello is seen again.
HELLO_WAIT_S = 1.0
_frame_decoder = msgspec.json.Decoder()
_frame_encoder = msgspec.json.Encoder()


class RuntimeConnection:
    """The gateway's end of one instance's runtime socket, with transparent reconnects.

    Frames are read by `ClientSocket` (runtime_socket.py) and handled synchronously as they
    arrive; a task exists only while a dropped socket is being re-established.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        podium: PodiumClient,
        instance_id: str,
        on_frame: Callable[[dict[str, Any]], None],
        on_lost: Callable[[str], Awaitable[None]],
        on_attached: Callable[[str | None, bool], None],
        reconnect_window_s: float,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
    ) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._podium = podium
        self.instance_id = instance_id
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._on_attached = on_attached
        self._reconnected = False
        self._reconnect_window_s = reconnect_window_s
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._socket: ClientSocket | None = None
        self._recovering: asyncio.Task[None] | None = None
        self._closing = False
        self._lost = False
        self._connected = asyncio.Event()
        self._greeted = asyncio.Event()
        self._held: list[dict[str, Any]] | None = []  # frames read while `open` awaits the hello

    def __repr__(self) -> str:
        return f"RuntimeConnection({self.instance_id!r})"

    async def open(self) -> None:
        """Connect once (raises `GatewayError` if Podium refuses), then keep the socket up.
        Returns once the runtime's hello has been handled (`on_attached`), or `HELLO_WAIT_S`
        later from a Podium that does not send one; the frames after the hello reach `on_frame`
        once the opener has resumed (after the session shows its state), in order."""
        self._socket = await self._connect()
        self._connected.set()
        try:
            if self._podium.greets:
                await asyncio.wait_for(self._greeted.wait(), HELLO_WAIT_S)
        except TimeoutError:
            self._podium.greets = False
            logger.warning(
                "Podium sent no {} hello within {} s: sessions show ready without knowing "
                "whether their runtime is busy",
                ATTACHED,
                HELLO_WAIT_S,
            )
        finally:
            asyncio.get_running_loop().call_soon(self._release_held)

    def _release_held(self) -> None:
        held, self._held = self._held or [], None
        for frame in held:
            self._on_frame(frame)

    async def send(self, frame: msgspec.Struct | dict[str, Any]) -> None:
        """Send one control frame (the gateway sends the command structs of
        `sessions/driver.py`; any JSON object encodes the same), waiting briefly through a
        reconnect if one is under way."""
        payload = _frame_encoder.encode(frame)
        if self._socket is not None and self._socket.send_text(payload):
            return
        try:
            async with asyncio.timeout(self._reconnect_window_s):
                while not (self._closing or self._lost):
                    await self._connected.wait()
                    if self._socket is not None and self._socket.send_text(payload):
                        return
                    self._connected.clear()
        except TimeoutError:
            pass
        raise GatewayError(ErrorCode.UPSTREAM_UNAVAILABLE, "Podium is unavailable")

    async def close(self) -> None:
        """Close the socket without stopping the instance (its turns go on in Podium)."""
        self._closing = True
        self._connected.set()  # wake senders waiting for a reconnect: they fail now
        recovering = self._recovering
        if recovering is not None and recovering is not asyncio.current_task():
            recovering.cancel()
        socket = self._socket
        if socket is not None:
            socket.close()
            await socket.wait_closed()

    # ----- reading ----------------------------------------------------------------------------

    def _frame_received(self, raw: bytes) -> None:
        """Hot path: one runtime message, straight from the socket's `data_received`."""
        frame = parse_runtime_frame(raw)
        if frame is None:
            return
        if frame.get("event_type") == ATTACHED:
            self._podium.greets = True
            self._on_attached(running_turn(frame), self._reconnected)
            self._greeted.set()
        elif self._held is not None:
            self._held.append(frame)
        else:
            self._on_frame(frame)

    # ----- connecting and reconnecting --------------------------------------------------------

    async def _connect(self) -> ClientSocket:
        try:
            return await open_socket(
                self._url,
                self._headers,
                on_message=self._frame_received,
                on_closed=self._socket_closed,
                open_timeout=OPEN_TIMEOUT_S,
                max_size=MAX_MESSAGE_BYTES,
                ping_interval=self._ping_interval_s,
                ping_timeout=self._ping_timeout_s,
            )
        except SocketUnavailable as exc:
            logger.debug("runtime socket for {} not opened: {}", self.instance_id, exc)
            raise GatewayError(ErrorCode.UPSTREAM_UNAVAILABLE, "Podium is unavailable") from None

    def _socket_closed(self, socket: ClientSocket) -> None:
        if self._closing or socket is not self._socket:
            return
        self._connected.clear()
        logger.info(
            "runtime socket for {} closed ({}), reconnecting", self.instance_id, socket.close_code
        )
        self._recovering = asyncio.create_task(
            self._recover(), name=f"runtime-reconnect:{self.instance_id}"
        )

    async def _recover(self) -> None:
        reason = await self._reconnect()
        self._recovering = None
        if reason is not None and not self._closing:
            self._lost = True
            self._connected.set()  # wake senders waiting for a reconnect: they fail now
            await self._on_lost(reason)

    async def _reconnect(self) -> str | None:
        """Reconnect with backoff; None on success, else why the runtime is lost."""
        deadline = time.monotonic() + self._reconnect_window_s
        attempt = 0
        while time.monotonic() < deadline and not self._closing:
            attempt += 1
            try:
                if not await self._podium.instance_exists(self.instance_id):
                    return "The agent instance is gone"
                self._socket = await self._connect()
                self._reconnected = True
                self._connected.set()
                logger.info("runtime socket for {} reconnected", self.instance_id)
                return None
            except GatewayError:
                await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=2.0))
        return "The agent runtime could not be reached"


def parse_runtime_frame(raw: bytes) -> dict[str, Any] | None:
    """A runtime message as a dict, or None (logged) when it is not a JSON object."""
    try:
        frame = _frame_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        logger.warning("dropping a runtime frame that is not JSON")
        return None
    return frame if isinstance(frame, dict) else None


def running_turn(attached: dict[str, Any]) -> str | None:
    """The turn a `runtime.attached` hello says the runtime is running, if any."""
    content = attached.get("content")
    running = content.get("running_turn_id") if isinstance(content, dict) else None
    return running if isinstance(running, str) else None
