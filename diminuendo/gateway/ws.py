"""`/ws`: the upgrade guard, the handshake, and the per-connection receive loop (PROTOCOL §2 to §7).

The receive loop is the inbound flow of ARCHITECTURE.md: size check → rate check →
`decode_client_frame` → authentication gate → permission check → a `SessionService` call → reply.
Messages about one session run one after another, in arrival order; messages about different
sessions (and `ping`) run concurrently, so a slow activation never stalls the rest of the socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from sanic import Blueprint, Request
from sanic.exceptions import WebsocketClosed
from sanic.http.constants import Stage
from sanic.response import json as json_response
from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.exceptions import ConnectionClosed

from diminuendo import __version__
from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import permission_for, require
from diminuendo.auth.routing import ROUTING_TENANT_HEADER, check_routing_tenant
from diminuendo.gateway.connection import Connection
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.rest_auth import client_address
from diminuendo.observability import context
from diminuendo.observability.tracing import span
from diminuendo.protocol import PROTOCOL_VERSION, SUPPORTED_VERSIONS
from diminuendo.protocol import messages as m
from diminuendo.protocol.codec import DecodeFailure, decode_client_frame, peek_request_id
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.ratelimit import SlidingWindow
from diminuendo.redaction import safe_message
from diminuendo.sanic_ws import close_on_invalid_utf8, stop_receiving
from diminuendo.sessions.stream import Replay

SUBPROTOCOL = "diminuendo.v1"
LINGER_S = 2.0
HANDLER_GRACE_S = 30.0  # how long a closed socket's state-changing handlers may still run
HEALTH_REQUEST_LINES = frozenset({b"GET /health HTTP/1.1", b"GET /api/health HTTP/1.1"})
# Header names (and one value) that send a health probe through Sanic instead of the fast path.
HEALTH_PROBE_REFUSES = (
    b"\r\norigin:",
    b"\r\nconnection: close",
    b"\r\ncontent-length:",
    b"\r\ntransfer-encoding:",
    b"\r\nupgrade:",
    b"\r\nexpect:",
)
CLOSE_AUTH_TIMEOUT = 4001
CLOSE_POLICY = 1008

bp = Blueprint("ws")


class GatewayWebSocketProtocol(WebSocketProtocol):
    """Sanic's connection protocol with five changes.

    Subprotocols: Sanic refuses a client that offers no subprotocol when the route lists some;
    ours is optional (only browsers sending `bearer.<jwt>` need it), so negotiate only when
    offered.

    Lingering close: when Sanic closes an HTTP connection with request bytes still unread (a body
    over `REQUEST_MAX_SIZE` gets its 413 as soon as the limit is crossed), closing at once makes
    the kernel answer the client's remaining bytes with a reset, and the client usually reports
    a broken connection instead of the 413. So, as nginx does, send FIN after the response, read
    and discard what the client still sends, and close when it stops or after `LINGER_S`.

    Health probes: a plain `GET /health` is answered from the cached bytes (see
    `_answer_health_probe`).

    Invalid UTF-8: a text message that does not decode closes the socket with 1007
    (`sanic_ws.close_on_invalid_utf8`).

    `last_heard`: when the client last sent anything, for the Hub's process-wide keepalive
    (Sanic's per-socket keepalive task is switched off).
    """

    __slots__ = ("_lingering", "last_heard")  # Sanic's protocol classes are slotted

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lingering = False
        self.last_heard = time.monotonic()  # of the last bytes from the client (Hub keepalive)

    async def websocket_handshake(self, request: Request, subprotocols: Any = None) -> Any:
        if not request.headers.get("sec-websocket-protocol"):
            subprotocols = None
        ws = await super().websocket_handshake(request, subprotocols)
        close_on_invalid_utf8(ws)
        return ws

    def close(self, timeout: float | None = None) -> None:
        transport = self.transport
        if (
            self.websocket is None
            and self.recv_buffer
            and transport is not None
            and not transport.is_closing()
            and transport.can_write_eof()
            and not self._lingering
        ):
            self._lingering = True
            self.recv_buffer.clear()
            transport.write_eof()
            transport.resume_reading()
            self.loop.call_later(LINGER_S, super().close, timeout)
            return
        super().close(timeout)

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        if self._lingering:
            return
        if self.websocket is None and data.startswith(b"GET /") and self._answer_health_probe(data):
            return
        super().data_received(data)

    def _answer_health_probe(self, data: bytes) -> bool:
        """Answer a plain health probe from the cached response, or return False for Sanic.

        Load balancers and orchestrators probe `/health` many times a second, and Sanic's
        request pipeline (request object, routing, middleware, header sanitising) cost more than
        the cached body. Only the exact, common shape takes this path: one complete
        `GET /health` or `GET /api/health` over HTTP/1.1 with no body, no query, no Origin
        (so no CORS answer is due) and no `Connection: close`, arriving while no other request
        is in progress on the connection, so responses cannot be reordered. In dev mode the
        `Host` must also be one of the plain loopback names of `host_guard.probe_hosts`.
        Anything else goes through Sanic unchanged (and there meets the dev-mode Host guard).
        """
        line_end = data.find(b"\r\n")
        if data[:line_end] not in HEALTH_REQUEST_LINES or self.recv_buffer:
            return False
        if not data.endswith(b"\r\n\r\n") or data.find(b"\r\n\r\n") != len(data) - 4:
            return False  # not exactly one complete request without a body
        lowered = data[line_end:].lower()
        if any(name in lowered for name in HEALTH_PROBE_REFUSES):
            return False
        http = getattr(self, "_http", None)
        if http is not None and http.stage is not Stage.IDLE:
            return False
        hosts = self.app.ctx.probe_hosts  # dev mode only: the DNS-rebinding guard
        if hosts is not None and _first_host(lowered) not in hosts:
            return False
        self.transport.write(self.app.ctx.gateway.health_report.probe_response())
        self._time = time.monotonic()  # Sanic's keep-alive timeout counts from here
        return True


def _first_host(head: bytes) -> bytes:
    """The first `Host` value of a lower-cased header block that starts with CRLF."""
    start = head.find(b"\r\nhost:")
    if start < 0:
        return b""
    return head[start + 7 : head.find(b"\r\n", start + 2)].strip()


@bp.on_request
async def guard_upgrade(request: Request) -> Any:
    """Runs before the 101: refusals here are plain HTTP answers and no socket is opened."""
    if request.route is None or request.route.name != "diminuendo.ws.websocket":
        return None
    request.ctx.identity = None
    request.ctx.client_address = client_address(request)
    try:
        request.ctx.identity = await _admit_upgrade(request, request.app.ctx.gateway)
    except GatewayError as exc:
        return _refuse(exc)
    return None


async def _admit_upgrade(request: Request, gateway: Gateway) -> Identity | None:
    """The identity the upgrade authenticates (None: the client will send `authenticate`), or
    the `GatewayError` to refuse it with: draining, a foreign Origin, no capacity, an unknown
    protocol version, a bad token, or a §13 limit of its user or client address."""
    if gateway.draining:
        raise GatewayError(ErrorCode.DRAINING)
    origin = request.headers.get("origin")
    if origin and not gateway.origin_allowed(origin):
        raise GatewayError(ErrorCode.FORBIDDEN, "Origin not allowed")
    gateway.hub.admission.check_capacity()
    version = request.args.get("protocolVersion")
    if version is not None and version not in {str(v) for v in SUPPORTED_VERSIONS}:
        raise GatewayError(ErrorCode.PROTOCOL_VERSION_MISMATCH, extra={"supported": [1]})
    address = request.ctx.client_address
    identity = None
    if gateway.settings.dev_mode:
        identity = gateway.dev_identity
    elif (token := _upgrade_token(request)) is not None:
        identity = await gateway.authenticate(token, address)
        check_routing_tenant(request.headers.get(ROUTING_TENANT_HEADER), identity)
    gateway.hub.check_connection(address, identity)
    return identity


def _refuse(error: GatewayError) -> Any:
    body: dict[str, Any] = {
        "error": {"code": error.code.value, "message": error.message, **(error.extra or {})}
    }
    headers = {}
    if error.retry_after_ms is not None:
        body["error"]["retryAfterMs"] = error.retry_after_ms
        headers["Retry-After"] = str(max(1, round(error.retry_after_ms / 1000)))
    return json_response(body, status=error.http_status, headers=headers)


def _upgrade_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    for offered in request.headers.get("sec-websocket-protocol", "").split(","):
        offered = offered.strip()
        if offered.startswith("bearer.") and len(offered) > 7:
            return offered[7:]
    return None


@bp.websocket("/ws", subprotocols=[SUBPROTOCOL], name="websocket")
async def websocket(request: Request, ws: WebsocketImplProtocol) -> None:
    gateway: Gateway = request.app.ctx.gateway
    connection = Connection(
        ws,
        send_queue_max=gateway.settings.ws_send_queue_max,
        send_buffer_bytes=gateway.settings.ws_send_buffer_bytes,
        ip=request.ctx.client_address,
        on_slow=gateway.metrics.slow_consumers.inc,
    )
    connection.identity = request.ctx.identity
    context.client_id.set(connection.client_id)
    try:
        gateway.hub.add(connection)
    except GatewayError as exc:
        # Concurrent upgrades all passed the check before the 101; this one is over a limit.
        connection.send(exc.to_frame())
        await ws.close(CLOSE_POLICY, "connection limit")
        stop_receiving(ws)
        await connection.aclose()
        return
    session = ClientSession(
        gateway, connection, routed_as=request.headers.get(ROUTING_TENANT_HEADER)
    )
    try:
        await session.run()
    finally:
        stop_receiving(ws)
        connection.closed = True  # replies of handlers still finishing go nowhere
        try:
            await session.finish_handlers(0.0 if gateway.draining else HANDLER_GRACE_S)
        finally:
            gateway.hub.remove(connection)
            for session_id in connection.joined:
                gateway.sessions.leave(session_id, connection)
            await connection.aclose()


class ClientSession:
    """The conversation with one connected client."""

    def __init__(
        self, gateway: Gateway, connection: Connection, *, routed_as: str | None = None
    ) -> None:
        self.gateway = gateway
        self._routed_as = routed_as  # the upgrade's X-Diminuendo-Tenant, checked at auth
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
        conn = self.conn
        conn.send(
            {
                "type": "welcome",
                "protocolVersion": PROTOCOL_VERSION,
                "requiresAuth": conn.identity is None,
                "serverVersion": __version__,
            }
        )
        conn.send(
            {
                "type": "connected",
                "clientId": conn.client_id,
                "heartbeatIntervalMs": int(self.settings.ws_heartbeat_interval_s * 1000),
                "ts": int(time.time() * 1000),
            }
        )
        if conn.identity is not None:
            conn.send({"type": "authenticated", "identity": conn.identity.to_wire()})
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
        conn = self.conn
        if isinstance(data, bytes):
            self._error(GatewayError(ErrorCode.INVALID_MESSAGE, "Binary frames are not supported"))
            return
        limit = self.settings.ws_max_message_bytes
        if len(data) > limit // 4 and len(data.encode()) > limit:
            self._error(
                GatewayError(ErrorCode.MESSAGE_TOO_LARGE, f"Message larger than {limit} bytes")
            )
            return
        wait = self.rate.hit(time.monotonic())
        if wait is not None:
            self.gateway.metrics.rate_limited()
            self._error(
                GatewayError(ErrorCode.RATE_LIMITED, retry_after_ms=max(1, int(wait * 1000))),
                peek_request_id(data),
            )
            return
        message = decode_client_frame(data)
        if isinstance(message, DecodeFailure):
            self._error(GatewayError(message.code, message.message), message.request_id)
            return
        if isinstance(message, m.Ping):
            reply: dict[str, Any] = {"type": "pong", "serverTs": int(time.time() * 1000)}
            if message.ts is not None:
                reply["ts"] = message.ts
            self._reply(reply, message.id)
            return
        if conn.identity is None and not isinstance(message, m.Authenticate):
            self._error(GatewayError(ErrorCode.NOT_AUTHENTICATED), message.id)
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
            self._error(exc, request_id)
        except Exception as exc:
            logger.opt(exception=exc).error("handler for {} failed", type(message).__name__)
            details = (
                safe_message(f"{type(exc).__name__}: {exc}") if self.settings.dev_mode else None
            )
            self._error(GatewayError(ErrorCode.INTERNAL_ERROR, details=details), request_id)

    # ----- replies ----------------------------------------------------------------------------

    def _reply(self, frame: dict[str, Any], request_id: str | None) -> None:
        if request_id is not None:
            frame["id"] = request_id
        self.conn.send(frame)

    def _error(self, error: GatewayError, request_id: str | None = None) -> None:
        self.gateway.metrics.error(error.code.value)
        self.conn.send(error.to_frame(request_id))

    def _ack(self, message: m.ClientMessage) -> None:
        self._reply({"type": "ack", "for": message.__struct_config__.tag}, message.id)

    # ----- handlers ---------------------------------------------------------------------------

    async def authenticate(self, message: m.Authenticate) -> None:
        if (
            message.protocol_version is not None
            and message.protocol_version not in SUPPORTED_VERSIONS
        ):
            raise GatewayError(
                ErrorCode.PROTOCOL_VERSION_MISMATCH, extra={"supported": list(SUPPORTED_VERSIONS)}
            )
        if self.gateway.settings.dev_mode:
            identity = self.gateway.dev_identity
        else:
            identity = await self.gateway.authenticate(message.token, self.conn.ip)
            check_routing_tenant(self._routed_as, identity)
        current = self.conn.identity
        if current is not None and (current.tenant_id, current.user_id) != (
            identity.tenant_id,
            identity.user_id,
        ):
            # A socket's subscriptions and broadcasts belong to one tenant and user: switching
            # would leak them. Re-authenticating as the same user (a fresh token, which moves
            # the expiry deadline) is fine.
            raise GatewayError(
                ErrorCode.FORBIDDEN, "This connection is bound to another identity; reconnect"
            )
        try:
            self.gateway.hub.set_identity(self.conn, identity)
        except GatewayError as exc:  # the user holds too many connections: not one more
            self._error(exc, message.id)
            self.conn.close(CLOSE_POLICY, "too many connections for this user")
            return
        context.tenant_id.set(identity.tenant_id)
        self._reply({"type": "authenticated", "identity": identity.to_wire()}, message.id)

    async def list_sessions(self, message: m.ListSessions) -> None:
        sessions = await self.gateway.sessions.list_sessions(
            self.conn.identity, message.include_archived
        )
        self._reply({"type": "session_list", "sessions": sessions}, message.id)

    async def create_session(self, message: m.CreateSession) -> None:
        session = await self.gateway.sessions.create_session(
            self.conn.identity,
            message.agent_type,
            name=message.name,
            project_id=message.project_id,
            metadata=message.metadata,
            requester=self.conn,
        )
        self._reply({"type": "session_created", "session": session}, message.id)

    async def rename_session(self, message: m.RenameSession) -> None:
        session = await self.gateway.sessions.rename_session(
            self.conn.identity, message.session_id, message.name, requester=self.conn
        )
        self._reply({"type": "session_updated", "session": session}, message.id)

    async def archive_session(self, message: m.ArchiveSession) -> None:
        await self.gateway.sessions.set_archived(
            self.conn.identity, message.session_id, True, requester=self.conn
        )
        self._reply({"type": "session_archived", "sessionId": message.session_id}, message.id)

    async def unarchive_session(self, message: m.UnarchiveSession) -> None:
        await self.gateway.sessions.set_archived(
            self.conn.identity, message.session_id, False, requester=self.conn
        )
        self._reply({"type": "session_unarchived", "sessionId": message.session_id}, message.id)

    async def delete_session(self, message: m.DeleteSession) -> None:
        await self.gateway.sessions.delete_session(
            self.conn.identity, message.session_id, requester=self.conn
        )
        self.conn.joined.discard(message.session_id)
        self._reply({"type": "session_deleted", "sessionId": message.session_id}, message.id)

    async def join_session(self, message: m.JoinSession) -> None:
        if message.after_seq is not None:
            self.gateway.metrics.replays.inc()

        # MAX_JOINED_PER_CONNECTION: the slot is taken before the first await (joins of other
        # sessions run concurrently) and given back if the join never subscribed.
        joined, limit = self.conn.joined, self.settings.max_joined_per_connection
        new = message.session_id not in joined
        if new and len(joined) >= limit:
            raise GatewayError(
                ErrorCode.QUOTA_EXCEEDED, f"At most {limit} sessions joined at once; leave one"
            )
        joined.add(message.session_id)
        subscribed = False

        def send(snapshot: dict[str, Any], replay: Replay) -> None:
            nonlocal subscribed
            subscribed = True
            self._reply(snapshot, message.id)
            for frame in replay.frames:
                self.conn.deliver(frame)

        page_frames, page_bytes = self.conn.replay_page
        try:
            await self.gateway.sessions.join(
                self.conn.identity,
                self.conn,
                message.session_id,
                after_seq=message.after_seq,
                epoch=message.epoch,
                send=send,
                page_frames=page_frames,
                page_bytes=page_bytes,
                replay_rest=self.conn.replay,
            )
        finally:
            if new and not subscribed:
                joined.discard(message.session_id)

    async def leave_session(self, message: m.LeaveSession) -> None:
        await self.gateway.sessions.get_session(self.conn.identity, message.session_id)
        self.gateway.sessions.leave(message.session_id, self.conn)
        self.conn.joined.discard(message.session_id)
        self._reply({"type": "session_left", "sessionId": message.session_id}, message.id)

    async def run_turn(self, message: m.RunTurn) -> None:
        subscribed = message.session_id in self.conn.joined
        turn = await self.gateway.sessions.run_turn(
            self.conn.identity,
            message.session_id,
            message.text,
            message.client_turn_id,
            on_accept=(
                (lambda turn_id: self.conn.expect_turn_reply(turn_id, message.id))
                if subscribed and message.id is not None
                else None
            ),
        )
        if not subscribed:
            reply: dict[str, Any] = {
                "type": "turn_started",
                "sessionId": message.session_id,
                "turnId": turn.turn_id,
            }
            if turn.client_turn_id is not None:
                reply["clientTurnId"] = turn.client_turn_id
            self._reply(reply, message.id)

    async def stop_turn(self, message: m.StopTurn) -> None:
        await self.gateway.sessions.stop_turn(self.conn.identity, message.session_id)
        self._ack(message)

    async def steer(self, message: m.Steer) -> None:
        await self.gateway.sessions.steer(self.conn.identity, message.session_id, message.content)
        self._ack(message)

    async def answer_question(self, message: m.AnswerQuestion) -> None:
        await self.gateway.sessions.answer(
            self.conn.identity,
            message.session_id,
            message.request_id,
            answers=message.answers,
            approved=message.approved,
            dismissed=message.dismissed,
        )
        self._ack(message)

    async def get_history(self, message: m.GetHistory) -> None:
        history = await self.gateway.sessions.history(
            self.conn.identity, message.session_id, limit=message.limit, before=message.before
        )
        self._reply({"type": "history", **history}, message.id)

    async def get_events(self, message: m.GetEvents) -> None:
        self.gateway.metrics.replays.inc()
        events = await self.gateway.sessions.events(
            self.conn.identity, message.session_id, message.after_seq, message.epoch, message.limit
        )
        self._reply({"type": "events", **events}, message.id)

    async def list_files(self, message: m.ListFiles) -> None:
        listing = await self.gateway.sessions.list_files(
            self.conn.identity, message.session_id, message.path, message.depth
        )
        self._reply({"type": "file_list", **listing}, message.id)

    async def read_file(self, message: m.ReadFile) -> None:
        content = await self.gateway.sessions.read_file(
            self.conn.identity, message.session_id, message.path
        )
        self._reply({"type": "file_content", **content}, message.id)

    async def file_history(self, message: m.FileHistory) -> None:
        history = await self.gateway.sessions.file_history(
            self.conn.identity, message.session_id, message.path
        )
        self._reply({"type": "file_history", **history}, message.id)

    async def file_at_iteration(self, message: m.FileAtIteration) -> None:
        content = await self.gateway.sessions.read_file(
            self.conn.identity, message.session_id, message.path, message.iteration
        )
        self._reply({"type": "file_content", **content}, message.id)

    async def manage_members(self, message: m.ManageMembers) -> None:
        members = await self.gateway.members.manage(
            self.conn.identity, message.action, user_id=message.user_id, role=message.role
        )
        self._reply({"type": "member_list", "members": members}, message.id)


# Messages whose handlers only read for this client: cancelled as soon as its socket closes.
CANCELLED_ON_CLOSE: frozenset[type] = frozenset(
    {
        m.Authenticate,
        m.ListSessions,
        m.LeaveSession,
        m.GetHistory,
        m.GetEvents,
        m.ListFiles,
        m.ReadFile,
        m.FileHistory,
        m.FileAtIteration,
    }
)

Handler = Callable[[ClientSession, Any], Awaitable[None]]
HANDLERS: dict[type, Handler] = {
    m.Authenticate: ClientSession.authenticate,
    m.ListSessions: ClientSession.list_sessions,
    m.CreateSession: ClientSession.create_session,
    m.RenameSession: ClientSession.rename_session,
    m.ArchiveSession: ClientSession.archive_session,
    m.UnarchiveSession: ClientSession.unarchive_session,
    m.DeleteSession: ClientSession.delete_session,
    m.JoinSession: ClientSession.join_session,
    m.LeaveSession: ClientSession.leave_session,
    m.RunTurn: ClientSession.run_turn,
    m.StopTurn: ClientSession.stop_turn,
    m.Steer: ClientSession.steer,
    m.AnswerQuestion: ClientSession.answer_question,
    m.GetHistory: ClientSession.get_history,
    m.GetEvents: ClientSession.get_events,
    m.ListFiles: ClientSession.list_files,
    m.ReadFile: ClientSession.read_file,
    m.FileHistory: ClientSession.file_history,
    m.FileAtIteration: ClientSession.file_at_iteration,
    m.ManageMembers: ClientSession.manage_members,
}
