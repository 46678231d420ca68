"""`create_app(settings)`: the Sanic app — blueprints, listeners, error handlers. Wiring only."""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension

from diminuendo import __version__
from diminuendo.gateway import console, health, host_guard, rest, rest_auth, rpc, ws
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.headers import security_headers
from diminuendo.gateway.openapi import register_components
from diminuendo.gc_policy import CollectorPolicy
from diminuendo.observability import context
from diminuendo.observability.tracing import configure_tracing, shutdown_tracing
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.redaction import safe_message
from diminuendo.sanic_ws import check_internals
from diminuendo.settings import Settings

APP_NAME = "diminuendo"
IDLE_SWEEP_INTERVAL_S = 30.0


class GatewayApp(Sanic):
    """Sanic serving through the gateway's connection protocol (`ws.GatewayWebSocketProtocol`:
    its fast writer, health probes, UTF-8 check) unless a caller names another, so the app runs
    the same under the cli, Sanic's own runner (`prepare`/`run`) and `create_server`."""

    def prepare(self, *args: Any, protocol: Any = None, **kwargs: Any) -> None:
        super().prepare(*args, protocol=protocol or ws.GatewayWebSocketProtocol, **kwargs)

    async def create_server(self, *args: Any, protocol: Any = None, **kwargs: Any) -> Any:
        protocol = protocol or ws.GatewayWebSocketProtocol
        return await super().create_server(*args, protocol=protocol, **kwargs)


def create_app(settings: Settings) -> Sanic:
    """The Sanic app for `settings`, built in named steps; the `Gateway` itself is built per
    worker in `before_server_start`. Fails at once if Sanic moved what `sanic_ws` reads."""
    check_internals()
    app = GatewayApp(APP_NAME, configure_logging=False)
    app.config.update(_sanic_config(settings))
    app.ctx.settings = settings
    host_guard.install(app, settings)
    _add_extensions(app)
    _add_blueprints(app, settings)
    _add_listeners(app)
    _add_request_hooks(app, settings)
    _add_error_handlers(app)
    return app


def _sanic_config(settings: Settings) -> dict[str, Any]:
    return {
        "FALLBACK_ERROR_FORMAT": "json",
        "ACCESS_LOG": False,
        "MOTD": settings.dev_mode,
        "WEBSOCKET_MAX_SIZE": settings.ws_hard_cap_bytes,
        # The idle rule of PROTOCOL.md §6 is kept by the Hub's one keepalive task, not by a
        # Sanic keepalive task per socket.
        "WEBSOCKET_PING_INTERVAL": None,
        "GRACEFUL_SHUTDOWN_TIMEOUT": settings.graceful_shutdown_timeout_s,
        # uvloop always (not just Sanic's "when installed" default, which SANIC_USE_UVLOOP can
        # turn off): on asyncio since Python 3.12, Sanic's shutdown waits for every idle
        # keep-alive client to leave before it closes them (docs/DECISIONS.md).
        "USE_UVLOOP": True,
        "REQUEST_MAX_SIZE": 2 * 1024 * 1024,
        "OAS": True,
        "OAS_UI_DEFAULT": "redoc",
        "OAS_UI_SWAGGER": False,
        "OAS_IGNORE_OPTIONS": True,
        "OAS_IGNORE_HEAD": True,
        "OAS_URI_TO_JSON": "/openapi.json",
        "HEALTH": False,
        "CORS_ORIGINS": "*" if settings.dev_mode else ",".join(settings.allowed_origins),
        # mcp-protocol-version: MCP hosts running in a browser send it to /mcp.
        "CORS_ALLOW_HEADERS": (
            "authorization,content-type,x-csrf-token,last-event-id,mcp-protocol-version"
        ),
        "CORS_MAX_AGE": 600,
        "CORS_SUPPORTS_CREDENTIALS": not settings.dev_mode,
        # Which forwarded client address to trust (PROTOCOL.md §13): `request.remote_addr`
        # is then the client behind the proxy, for every per-address limit.
        "PROXIES_COUNT": settings.proxies_count,
        "REAL_IP_HEADER": settings.real_ip_header or None,
        "FORWARDED_SECRET": settings.forwarded_secret or None,
    }


def _add_extensions(app: Sanic) -> None:
    # After the config (sanic-ext reads CORS_* and OAS_* from it now). Only the extensions the
    # gateway uses: the built-in dependency injection alone would add an `http.routing.after`
    # signal dispatch to every request, which TOUCHUP cannot remove.
    Extend(app, extensions=[HTTPExtension, OpenAPIExtension], built_in_extensions=False)
    app.ext.openapi.describe(
        "Diminuendo", version=__version__, description="Client gateway: REST, SSE and Fabric RPC"
    )


def _add_blueprints(app: Sanic, settings: Settings) -> None:
    for blueprint in (ws.bp, health.bp, rest_auth.bp, rest.bp, rpc.bp, console.bp):
        app.blueprint(blueprint)
    if settings.edge_adapters:
        from diminuendo.edges import mount_edges

        mount_edges(app, settings.edge_adapters)


def _add_listeners(app: Sanic) -> None:
    app.register_listener(_start_gateway, "before_server_start")
    # Shutdown listeners run in reverse order of registration: registered after the /ws routes,
    # this runs before Sanic's own listener cancels the WebSocket handlers.
    app.register_listener(_drain, "before_server_stop")
    app.register_listener(_stop_gateway, "after_server_stop")


async def _start_gateway(app: Sanic) -> None:
    settings: Settings = app.ctx.settings
    configure_tracing(settings.otel_exporter_otlp_endpoint, settings.otel_service_name)
    register_components()
    gateway = Gateway(settings)
    app.ctx.gateway = gateway
    await gateway.start()
    app.ctx.sweeper = asyncio.create_task(_sweep_idle(gateway), name="idle-sweeper")
    app.ctx.gc_policy = CollectorPolicy(settings.gc_freeze_interval_s, settings.gc_full_interval_s)
    app.ctx.gc_policy.start()


async def _drain(app: Sanic) -> None:
    """SIGTERM/SIGINT: refuse new work, say goodbye with 1001, let turns go on in Podium."""
    gateway: Gateway = app.ctx.gateway
    gateway.start_draining()
    if gateway.settings.drain_delay_s:
        # Health answers 503 meanwhile, so a load balancer stops routing here first.
        await asyncio.sleep(gateway.settings.drain_delay_s)
    logger.info("draining: closing {} client connections", len(gateway.hub.connections))
    await gateway.hub.close_all(1001, "server going away")
    await gateway.sessions.shutdown()


async def _stop_gateway(app: Sanic) -> None:
    app.ctx.sweeper.cancel()
    app.ctx.gc_policy.stop()
    try:
        await app.ctx.gateway.stop()
    finally:
        shutdown_tracing()  # flushes spans, at most 2 s


def _add_request_hooks(app: Sanic, settings: Settings) -> None:
    headers = security_headers(settings.dev_mode)

    async def add_security_headers(request: Request, response: HTTPResponse) -> None:
        response.headers.update(headers)

    app.on_request(_request_context)
    app.on_response(add_security_headers)


async def _request_context(request: Request) -> None:
    """Propagate a caller's X-Request-ID to upstream calls, if it is a safe token."""
    context.request_id.set(context.incoming_request_id(request.headers.get("x-request-id")))
    if request.path.startswith(("/api/", "/rpc")):
        rest_auth.check_csrf(request)
    if request.stream is not None and request.stream.request_body:
        # A body on a route that ignores it (GET, DELETE): read and drop it here, or Sanic
        # logs the client's mistake as a server error ("body not consumed").
        await request.receive_body()


def _add_error_handlers(app: Sanic) -> None:
    app.exception(GatewayError)(_gateway_error)
    app.exception(SanicException)(_http_error)
    app.exception(Exception)(_unexpected)


async def _gateway_error(request: Request, exc: GatewayError) -> HTTPResponse:
    headers = {}
    if exc.retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_ms / 1000)))
    return json(_error_body(exc.code, exc.message), status=exc.http_status, headers=headers)


_HTTP_ERROR_CODES = {
    400: ErrorCode.INVALID_MESSAGE,
    401: ErrorCode.NOT_AUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    413: ErrorCode.MESSAGE_TOO_LARGE,
}


async def _http_error(request: Request, exc: SanicException) -> HTTPResponse:
    if exc.status_code == 404:
        return json(_error_body("NOT_FOUND", "Not found"), status=404)
    if exc.status_code == 405:
        return json(_error_body("METHOD_NOT_ALLOWED", "Method not allowed"), status=405)
    code = _HTTP_ERROR_CODES.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
    message = safe_message(str(exc)) if exc.status_code < 500 else None
    return json(_error_body(code, message or "Internal error"), status=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> HTTPResponse:
    logger.opt(exception=exc).error("unhandled error on {} {}", request.method, request.path)
    return json(_error_body(ErrorCode.INTERNAL_ERROR, "Internal error"), status=500)


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": str(code), "message": message}}


async def _sweep_idle(gateway: Gateway) -> None:
    while True:
        await asyncio.sleep(min(IDLE_SWEEP_INTERVAL_S, gateway.settings.session_idle_timeout_s))
        try:
            await gateway.sessions.sweep_idle()
        except Exception as exc:  # a failed sweep is retried next round
            logger.opt(exception=exc).warning("idle sweep failed")
