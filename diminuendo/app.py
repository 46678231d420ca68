"""`create_app(settings)`: the Sanic app — blueprints, listeners, error handlers. Wiring only."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from loguru import logger
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension

from diminuendo import __version__
from diminuendo.gateway import console, health, rest, rest_auth, rpc, ws
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.headers import security_headers
from diminuendo.gateway.openapi import register_components
from diminuendo.gc_policy import CollectorPolicy
from diminuendo.observability import context
from diminuendo.observability.tracing import configure_tracing, shutdown_tracing
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.redaction import safe_message
from diminuendo.settings import Settings

APP_NAME = "diminuendo"
IDLE_SWEEP_INTERVAL_S = 30.0
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def create_app(settings: Settings) -> Sanic:
    app = Sanic(APP_NAME, configure_logging=False)
    app.config.update(
        {
            "FALLBACK_ERROR_FORMAT": "json",
            "ACCESS_LOG": False,
            "MOTD": settings.dev_mode,
            "WEBSOCKET_MAX_SIZE": settings.ws_hard_cap_bytes,
            # The idle rule of PROTOCOL.md §6 is kept by the Hub's one keepalive task, not by a
            # Sanic keepalive task per socket.
            "WEBSOCKET_PING_INTERVAL": None,
            "GRACEFUL_SHUTDOWN_TIMEOUT": settings.graceful_shutdown_timeout_s,
            # uvloop always (not just Sanic's "when installed" default, which SANIC_USE_UVLOOP
            # can turn off): on asyncio since Python 3.12, Sanic's shutdown waits for every
            # idle keep-alive client to leave before it closes them (docs/DECISIONS.md).
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
            "CORS_ALLOW_HEADERS": "authorization,content-type,x-csrf-token,last-event-id",
            "CORS_MAX_AGE": 600,
            "CORS_SUPPORTS_CREDENTIALS": not settings.dev_mode,
        }
    )
    app.ctx.settings = settings
    # After the config (sanic-ext reads CORS_* and OAS_* from it now). Only the extensions the
    # gateway uses: the built-in dependency injection alone would add an `http.routing.after`
    # signal dispatch to every request, which TOUCHUP cannot remove.
    Extend(app, extensions=[HTTPExtension, OpenAPIExtension], built_in_extensions=False)
    app.ext.openapi.describe(
        "Diminuendo", version=__version__, description="Client gateway: REST, SSE and Fabric RPC"
    )
    app.blueprint(ws.bp)
    app.blueprint(health.bp)
    app.blueprint(rest_auth.bp)
    app.blueprint(rest.bp)
    app.blueprint(rpc.bp)
    app.blueprint(console.bp)
    if settings.edge_adapters:
        from diminuendo.edges import mount_edges

        mount_edges(app, settings.edge_adapters)

    @app.before_server_start
    async def start_gateway(app: Sanic) -> None:
        configure_tracing(settings.otel_exporter_otlp_endpoint, settings.otel_service_name)
        register_components()
        gateway = Gateway(settings)
        app.ctx.gateway = gateway
        await gateway.start()
        app.ctx.sweeper = asyncio.create_task(_sweep_idle(gateway), name="idle-sweeper")
        app.ctx.gc_policy = CollectorPolicy(
            settings.gc_freeze_interval_s, settings.gc_full_interval_s
        )
        app.ctx.gc_policy.start()

    async def drain(app: Sanic) -> None:
        """SIGTERM/SIGINT: refuse new work, say goodbye with 1001, let turns go on in Podium."""
        gateway: Gateway = app.ctx.gateway
        gateway.start_draining()
        if settings.drain_delay_s:
            # Health answers 503 meanwhile, so a load balancer stops routing here first.
            await asyncio.sleep(settings.drain_delay_s)
        logger.info("draining: closing {} client connections", len(gateway.hub.connections))
        await gateway.hub.close_all(1001, "server going away")
        await gateway.sessions.shutdown()

    # Shutdown listeners run in reverse order of registration: registered after the /ws routes,
    # this runs before Sanic's own listener cancels the WebSocket handlers.
    app.register_listener(drain, "before_server_stop")

    @app.after_server_stop
    async def stop_gateway(app: Sanic) -> None:
        app.ctx.sweeper.cancel()
        app.ctx.gc_policy.stop()
        try:
            await app.ctx.gateway.stop()
        finally:
            shutdown_tracing()  # flushes spans, at most 2 s

    @app.on_request
    async def request_context(request: Request) -> None:
        """Propagate a caller's X-Request-ID to upstream calls, if it is a safe token."""
        incoming = request.headers.get("x-request-id", "")
        context.request_id.set(
            incoming if incoming and SAFE_REQUEST_ID.match(incoming) else context.new_request_id()
        )
        if request.path.startswith(("/api/", "/rpc")):
            rest_auth.check_csrf(request)

    headers = security_headers(settings.dev_mode)

    @app.on_response
    async def add_security_headers(request: Request, response: HTTPResponse) -> None:
        response.headers.update(headers)

    @app.exception(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> HTTPResponse:
        headers = {}
        if exc.retry_after_ms is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after_ms / 1000)))
        return json(_error_body(exc.code, exc.message), status=exc.http_status, headers=headers)

    @app.exception(SanicException)
    async def http_error(request: Request, exc: SanicException) -> HTTPResponse:
        code = {
            400: ErrorCode.INVALID_MESSAGE,
            401: ErrorCode.NOT_AUTHENTICATED,
            403: ErrorCode.FORBIDDEN,
            413: ErrorCode.MESSAGE_TOO_LARGE,
        }.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
        message = safe_message(str(exc)) if exc.status_code < 500 else None
        if exc.status_code == 404:
            return json(_error_body("NOT_FOUND", "Not found"), status=404)
        if exc.status_code == 405:
            return json(_error_body("METHOD_NOT_ALLOWED", "Method not allowed"), status=405)
        return json(_error_body(code, message or "Internal error"), status=exc.status_code)

    @app.exception(Exception)
    async def unexpected(request: Request, exc: Exception) -> HTTPResponse:
        logger.opt(exception=exc).error("unhandled error on {} {}", request.method, request.path)
        return json(_error_body(ErrorCode.INTERNAL_ERROR, "Internal error"), status=500)

    return app


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": str(code), "message": message}}


async def _sweep_idle(gateway: Gateway) -> None:
    while True:
        await asyncio.sleep(min(IDLE_SWEEP_INTERVAL_S, gateway.settings.session_idle_timeout_s))
        try:
            await gateway.sessions.sweep_idle()
        except Exception as exc:  # a failed sweep is retried next round
            logger.opt(exception=exc).warning("idle sweep failed")
