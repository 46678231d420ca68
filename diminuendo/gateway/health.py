"""`/health`, `/api/health` (PROTOCOL.md §9) and `/metrics` — read-only views of cached state,
so they answer instantly even when every upstream hangs."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, raw

from diminuendo.gateway.context import Gateway
from diminuendo.observability.metrics import CONTENT_TYPE

bp = Blueprint("health")


@bp.get("/health", name="health")
@bp.get("/api/health", name="api_health")
async def health(request: Request) -> HTTPResponse:
    gateway: Gateway = request.app.ctx.gateway
    body, status = gateway.health_body()
    return json(body, status=status)


@bp.get("/metrics")
async def metrics(request: Request) -> HTTPResponse:
    gateway: Gateway = request.app.ctx.gateway
    return raw(gateway.metrics.render(), content_type=CONTENT_TYPE)
