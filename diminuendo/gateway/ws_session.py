"""The conversation with one connected client: the greeting, then the receive loop.

The receive loop is the inbound flow of ARCHITECTURE.md: size check → rate check →
`decode_client_frame` → authentication gate → permission check → a handler of `ws_handlers`
→ reply. Messages about one session run one after another, in arrival order; messages about
different sessions (and `ping`) run concurrently, so a slow activation never stalls the rest of
the socket.
"""

from __future__ import annotations

import asyncio
import time

from loguru import logger
from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed

from diminuendo import __version__
from diminuendo.auth.policy import permission_for, require
from diminuendo.gateway import frames
from diminuendo.gateway.connection import Connection
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.ws_handlers import CANCELLED_ON_CLOSE, HANDLERS
from diminuendo.observability import context
from diminuendo.observability.tracing import span
from diminuendo.protocol import PROTOCOL_VERSION
from diminuendo.protocol import events as ev
from diminuendo.protocol import messages as m
from diminuendo.protocol.codec import DecodeFailure, decode_client_frame, peek_request_id
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.ratelimit import SlidingWindow
from diminuendo.redaction import safe_message

CLOSE_AUTH_TIMEOUT = 4001


class ClientSession:
    """The conversation with one connected client."""

    def __init__(
        self, gateway: Gateway, connection: Connection, *, routed_as: str | None = None
    ) -> None:
        self.gateway = gateway
        self.routed_as = routed_as  # the upgrade's X-Diminuendo-Tenant, checked at auth
        self.settings = gateway.settings
        self.conn = connection
        self.ws = connection.ws
        limit, window = self.settings.ws_rate_limit
        self.rate = SlidingWindow(limit, window)
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reads: set[asyncio.Task[None]] = set()  # the ones in CANCELLED_ON_CLOSE
        if connection.identity is not None:
            context.tenant_id.set(connection.identity.tenant_id)

    async def run(self) -> None:
        self._greet()
        conn = self.conn
        auth_deadline = time.monotonic() + self.settings.auth_timeout_s
        try:
            while not conn.closed:
                timeout = None
                if conn.identity is None:
                    timeout = auth_deadline - time.monotonic()
                    if timeout <= 0:
                        await self.ws.close(CLOSE_AUTH_TIMEOUT, "authentication timeout")
                        return
                try:
                    data = await self.ws.recv(timeout=timeout)
                except (WebsocketClosed, ConnectionClosed):
                    return
                if data is None:
                    continue  # timed out: the loop re-checks the auth deadline
                self.gateway.metrics.message_in()
                self._receive(data)
        finally:
            for task in list(self._reads):
                task.cancel()

    def _greet(self) -> None:
        """`welcome` and `connected`, then `authenticated` when the upgrade carried a token."""
        conn = self.conn
        conn.send(
            ev.Welcome(
                protocol_version=PROTOCOL_VERSION,
                requires_auth=conn.identity is None,
                server_version=__version__,
            )
        )
        conn.send(
            ev.Connected(
                client_id=conn.client_id,
                heartbeat_interval_ms=int(self.settings.ws_heartbeat_interval_s * 1000),
                ts=int(time.time() * 1000),
            )
        )
        if conn.identity is not None:
            conn.send(ev.Authenticated(identity=frames.identity(conn.identity)))

    async def finish_handlers(self, grace_s: float) -> None:
        """The socket is gone: reads were cancelled when `run` ended; handlers that change a
        session run to their end (their upstream calls are bounded), since cancelling one midway
        could leave the session half-changed (a turn marked running that the runtime never
        received keeps the session busy for good). Whatever is left after `grace_s` is
        cancelled, so nothing outlives the socket for long."""
        pending = list(self._tasks)
        try:
            if pending and grace_s > 0:
                await asyncio.wait(pending, timeout=grace_s)
        finally:
            for task in pending:
                task.cancel()

    def _receive(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            self.send_error(
                GatewayError(ErrorCode.INVALID_MESSAGE, "Binary frames are not supported")
            )
            return
        limit = self.settings.ws_max_message_bytes
        if len(data) > limit // 4 and len(data.encode()) > limit:
            self.send_error(
                GatewayError(ErrorCode.MESSAGE_TOO_LARGE, f"Message larger than {limit} bytes")
            )
            return
        wait = self.rate.hit(time.monotonic())
        if wait is not None:
            self.gateway.metrics.rate_limited()
            self.send_error(
                GatewayError(ErrorCode.RATE_LIMITED, retry_after_ms=max(1, int(wait * 1000))),
                peek_request_id(data),
            )
            return
        message = decode_client_frame(data)
        if isinstance(message, DecodeFailure):
            self.send_error(GatewayError(message.code, message.message), message.request_id)
            return
        if isinstance(message, m.Ping):
            self.conn.send(ev.Pong(server_ts=int(time.time() * 1000), ts=message.ts, id=message.id))
            return
        if self.conn.identity is None and not isinstance(message, m.Authenticate):
            self.send_error(GatewayError(ErrorCode.NOT_AUTHENTICATED), message.id)
            return
        session_key = getattr(message, "session_id", None)
        self._schedule(message, session_key)

    def _schedule(self, message: m.ClientMessage, session_key: str | None) -> None:
        """Run the handler as a task, after the previous message about the same session."""
        previous = self._chains.get(session_key) if session_key else None
        task = asyncio.create_task(self._handle(message, previous))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if type(message) in CANCELLED_ON_CLOSE:
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)
        if session_key:
            self._chains[session_key] = task
            task.add_done_callback(
                lambda t, key=session_key: (
                    self._chains.pop(key, None) if self._chains.get(key) is t else None
                )
            )

    async def _handle(self, message: m.ClientMessage, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        request_id = message.id
        # The message id is the client's correlation key, not a safe or unique request id.
        context.request_id.set(context.new_request_id())
        session_id = getattr(message, "session_id", None)
        context.session_id.set(session_id)
        try:
            with span(
                f"ws {message.__struct_config__.tag}",
                kind="server",
                session_id=session_id,
                client_id=self.conn.client_id,
            ):
                if not isinstance(message, m.Authenticate):
                    require(self.conn.identity, permission_for(message))
                await HANDLERS[type(message)](self, message)
        except GatewayError as exc:
            if exc.session_id is None and session_id is not None:
                exc.session_id = session_id
            self.send_error(exc, request_id)
        except Exception as exc:
            logger.opt(exception=exc).error("handler for {} failed", type(message).__name__)
            details = (
                safe_message(f"{type(exc).__name__}: {exc}") if self.settings.dev_mode else None
            )
            self.send_error(GatewayError(ErrorCode.INTERNAL_ERROR, details=details), request_id)

    def send_error(self, error: GatewayError, request_id: str | None = None) -> None:
        self.gateway.metrics.error(error.code.value)
        self.conn.send(error.to_frame(request_id))
