"""`/health`, `/api/health` (PROTOCOL.md §9) and `/metrics` — read-only views of cached state,
so they answer instantly even when every upstream hangs.

`/metrics` shows connection counts, traffic by message type, upstream latencies and error
rates; with `METRICS_TOKEN` set it answers only `Authorization: Bearer <METRICS_TOKEN>` (compared
in constant time, so response timing does not reveal how much of a guess was right) and 401
otherwise. Unset, it is open, for a scraper that reaches it over a private network only.
"""

from __future__ import annotations

import hmac

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, raw
from sanic_ext import openapi

from diminuendo.gateway.context import Gateway
from diminuendo.observability.metrics import CONTENT_TYPE
from diminuendo.protocol.errors import ErrorCode

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
    token = gateway.settings.metrics_token
    if token and not bearer_matches(request.headers.get("authorization", ""), token):
        body = {
            "error": {
                "code": ErrorCode.NOT_AUTHENTICATED.value,
                "message": "Metrics need Authorization: Bearer <METRICS_TOKEN>",
            }
        }
        return json(body, status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return raw(gateway.metrics.render(), content_type=CONTENT_TYPE)


def bearer_matches(header: str, token: str) -> bool:
    """Whether an Authorization header is `Bearer <token>` (scheme in any case), compared in
    constant time over UTF-8 bytes (any header text, even non-ASCII, compares without error)."""
    scheme, _, presented = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8")
    )
