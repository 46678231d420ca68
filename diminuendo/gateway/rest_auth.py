"""Authentication on HTTP routes and the `/api/me` and `/api/auth/csrf` endpoints."""

from __future__ import annotations

import secrets

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from diminuendo.auth.client_address import address_key
from diminuendo.auth.identity import Identity
from diminuendo.auth.routing import ROUTING_TENANT_HEADER, check_routing_tenant
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.openapi import documented
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.rest import Me

bp = Blueprint("auth")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_csrf(request: Request) -> None:
    """Double-submit check for mutating requests from a browser (one that sends `Origin`):
    the `X-CSRF-Token` header must equal the `csrf_token` cookie from `GET /api/auth/csrf`.
    Not in dev mode; not for clients without an Origin (CLIs and services send Bearer only)."""
    gateway: Gateway = request.app.ctx.gateway
    if gateway.settings.dev_mode or request.method not in MUTATING:
        return
    if not request.headers.get("origin"):
        return
    cookie = request.cookies.get("csrf_token") or ""
    header = request.headers.get("x-csrf-token") or ""
    if not cookie or not secrets.compare_digest(cookie, header):
        raise GatewayError(ErrorCode.FORBIDDEN, "Missing or mismatched CSRF token")


def client_address(request: Request) -> str:
    """The key of the caller's address for per-address limits: the client named by the proxy
    header Sanic's `PROXIES_COUNT`/`REAL_IP_HEADER`/`FORWARDED_SECRET` trust, else the peer."""
    return address_key(request.remote_addr, request.ip)


async def request_identity(request: Request) -> Identity:
    """The caller of an HTTP route: Bearer token (whose tenant must be the routing header's, if
    one was sent: `auth/routing.py`), or the dev identity in dev mode."""
    gateway: Gateway = request.app.ctx.gateway
    if gateway.settings.dev_mode:
        return gateway.dev_identity
    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer " or not header[7:].strip():
        raise GatewayError(ErrorCode.NOT_AUTHENTICATED, "A Bearer token is required")
    identity = await gateway.authenticate(header[7:].strip(), client_address(request))
    check_routing_tenant(request.headers.get(ROUTING_TENANT_HEADER), identity)
    return identity


@bp.get("/api/me")
@documented("Who you are and what you may do", ok=(200, Me), errors=(401,), tag="auth")
async def me(request: Request) -> HTTPResponse:
    identity = await request_identity(request)
    return json(
        {**identity.to_wire(), "permissions": sorted(p.value for p in identity.permissions())}
    )


@bp.get("/api/auth/csrf")
@documented("Issue the CSRF double-submit token (cookie + body)", errors=(), tag="auth")
async def csrf(request: Request) -> HTTPResponse:
    """Issue the double-submit CSRF token: the same value as cookie and body."""
    gateway: Gateway = request.app.ctx.gateway
    token = secrets.token_urlsafe(32)
    response = json({"csrfToken": token})
    response.add_cookie(
        "csrf_token",
        token,
        samesite="Strict",
        secure=not gateway.settings.dev_mode,
        httponly=False,
        path="/",
    )
    return response
