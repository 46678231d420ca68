"""`/ws`: the upgrade guard, the handshake and the connection's lifetime (PROTOCOL §2).

Refusals happen before the 101 (`guard_upgrade`); an accepted socket is registered with the Hub,
handed to its `ClientSession` (`ws_session.py`: the receive loop; `ws_handlers.py`: what each
message does) and cleaned up when it ends.
"""

from __future__ import annotations

import time
from typing import Any

from sanic import Blueprint, Request
from sanic.response import json as json_response
from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from sanic.server.websockets.impl import WebsocketImplProtocol

from diminuendo.auth.identity import Identity
from diminuendo.auth.routing import ROUTING_TENANT_HEADER, check_routing_tenant
from diminuendo.gateway.connection import Connection
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.rest_auth import client_address
from diminuendo.gateway.ws_handlers import CLOSE_POLICY
from diminuendo.gateway.ws_session import ClientSession
from diminuendo.observability import context
from diminuendo.protocol import SUBPROTOCOL, SUPPORTED_VERSIONS
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sanic_ws import (
    close_on_invalid_utf8,
    http_idle,
    keep_alive_from_now,
    last_request,
    server_stopping,
    stop_receiving,
)

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

bp = Blueprint("ws")


class GatewayWebSocketProtocol(WebSocketProtocol):
    """Sanic's connection protocol with six changes.

    Subprotocols: Sanic refuses a client that offers no subprotocol when the route lists some;
    ours is optional (only browsers sending `bearer.<jwt>` need it), so negotiate only when
    offered.

    Lingering close: when Sanic closes an HTTP connection, request bytes may still be on their
    way (a body over `REQUEST_MAX_SIZE` gets its 413 as soon as the headers announce it, often
    before any of the body has arrived), and closing at once makes the kernel answer them with a
    reset: the client usually reports a broken connection instead of the 413. So, as nginx does,
    send FIN after the response, read and discard what the client still sends, and close when it
    stops or after `LINGER_S`. Always, not only when unread bytes are already buffered: whether
    the first body bytes had arrived when the 413 went out is a race (1 in 8 runs lost the 413
    on a loaded machine with that condition). Not once the server is stopping: an idle keep-alive
    client that does not read its socket (an HTTP pool, an MCP host) held every stop for the
    whole linger; there a 413 may be lost to a reset, as it would be to the stop itself.

    Stopping: a connection busy when Sanic's shutdown begins closes once its response is sent
    (`close_if_idle`), not at the end of `GRACEFUL_SHUTDOWN_TIMEOUT`.

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
            and transport is not None
            and not transport.is_closing()
            and transport.can_write_eof()
            and not self._lingering
            and not server_stopping(self)
        ):
            self._lingering = True
            self.recv_buffer.clear()
            transport.write_eof()
            transport.resume_reading()
            self.loop.call_later(LINGER_S, super().close, timeout)
            return
        super().close(timeout)

    def close_if_idle(self) -> bool:
        """Shutdown (Sanic's runner, once the listener is closed) closes the idle connections
        and waits for the others. Sanic would keep a busy one open after its response, for the
        client's next request, until `GRACEFUL_SHUTDOWN_TIMEOUT` (an MCP tool call or an SSE
        stream ending with `DRAINING`): it closes once that response is sent instead."""
        if self.websocket is None:
            last_request(self)
        return super().close_if_idle()

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
        if not http_idle(self):
            return False
        hosts = self.app.ctx.probe_hosts  # dev mode only: the DNS-rebinding guard
        if hosts is not None and _first_host(lowered) not in hosts:
            return False
        self.transport.write(self.app.ctx.gateway.health_report.probe_response())
        keep_alive_from_now(self)  # Sanic's keep-alive timeout counts from here
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
