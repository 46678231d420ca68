"""`/health`, `/api/health` (PROTOCOL.md §9) and `/metrics` — read-only views of cached state,
so they answer instantly even when every upstream hangs."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw
from sanic_ext import openapi

from diminuendo.gateway.context import Gateway
from diminuendo.observability.metrics import CONTENT_TYPE

bp = Blueprint("health")


def _health(request: Request) -> HTTPResponse:
    gateway: Gateway = request.app.ctx.gateway
    body, status = gateway.health_response()
    return raw(body, status=status, content_type="application/json")


@bp.get("/health")
@openapi.definition(summary="Dependency health and instance metrics", tag="health")
async def health(request: Request) -> HTTPResponse:
    return _health(request)


@bp.get("/api/health")
@openapi.definition(summary="Same as /health", tag="health")
async def api_health(request: Request) -> HTTPResponse:
    return _health(request)


@bp.get("/metrics")
@openapi.exclude()
async def metrics(request: Request) -> HTTPResponse:
    gateway: Gateway = request.app.ctx.gateway
    return raw(gateway.metrics.render(), content_type=CONTENT_TYPE)
