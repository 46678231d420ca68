"""MCP edge (docs/EDGES.md): the gateway's tools and resources at `/mcp` (streamable HTTP).

The wire format is the `mcp` SDK's own streamable HTTP transport (`StreamableHTTPSessionManager`,
stateless: the gateway keeps no MCP session, so any instance behind the load balancer can answer
any request, as for REST), reached from Sanic through `edges/asgi.py`. The route authenticates the
bearer token and rate-limits exactly as REST does, refuses an Origin outside `ALLOWED_ORIGINS`
(the MCP spec's DNS-rebinding rule), and hands the caller to the tools in the ASGI scope.
"""

from __future__ import annotations

import asyncio

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, json
from sanic_ext.extensions.openapi import openapi

from diminuendo.edges.asgi import SCOPE_GATEWAY, SCOPE_IDENTITY, serve_asgi
from diminuendo.edges.mcp_tools import build_server
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.rest import authorize
from diminuendo.protocol import messages as m
from diminuendo.protocol.errors import ErrorCode, GatewayError

PATH = "/mcp"


def mount(app: Sanic) -> None:
    server = build_server()
    # Builds the SDK's session manager (the Starlette app it returns is not used: Sanic serves).
    server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    bp = Blueprint("mcp")
    running: dict[str, asyncio.Task[None]] = {}
    stop = asyncio.Event()

    async def start_manager(app: Sanic) -> None:
        started = asyncio.Event()

        async def run() -> None:
            async with server.session_manager.run():
                started.set()
                await stop.wait()

        running["task"] = asyncio.create_task(run(), name="mcp-session-manager")
        await started.wait()

    async def stop_manager(app: Sanic) -> None:
        stop.set()
        await running.pop("task")

    app.register_listener(start_manager, "before_server_start")
    app.register_listener(stop_manager, "after_server_stop")

    @bp.post(PATH, name="mcp")
    async def mcp_endpoint(request: Request) -> HTTPResponse | None:
        return await _serve(request, server)

    @bp.route(PATH, methods=["GET", "DELETE"], name="mcp_stateless")
    async def no_stream_no_session(request: Request) -> HTTPResponse:
        """Stateless: no standalone SSE stream to open (nothing would ever be sent on it) and
        no session to end; the spec's answer to both is 405."""
        return json(
            {"error": {"code": "METHOD_NOT_ALLOWED", "message": "POST JSON-RPC messages to /mcp"}},
            status=405,
            headers={"Allow": "POST"},
        )

    app.blueprint(bp)
    # MCP's own transport, described by the MCP spec; not a REST operation of this document.
    openapi.exclude(bp=bp)


async def _serve(request: Request, server: MCPServer) -> HTTPResponse | None:
    gateway: Gateway = request.app.ctx.gateway
    origin = request.headers.get("origin")
    if origin and not gateway.origin_allowed(origin):
        raise GatewayError(ErrorCode.FORBIDDEN, "Origin not allowed")
    # Authentication and the per-user rate limit of REST; each tool checks its own permission.
    identity = await authorize(request, m.Ping)
    extra = {SCOPE_GATEWAY: gateway, SCOPE_IDENTITY: identity}
    return await serve_asgi(request, server.session_manager.handle_request, extra)
