"""`/health`, `/api/health` (PROTOCOL.md §9) and `/metrics` — read-only views of cached state,
so they answer instantly even when every upstream hangs.

`HealthReport` builds the §9 body from the gateway's live state and caches its encodings (the
JSON body for the routes here and RPC, the whole HTTP response for the protocol's fast path in
`gateway/ws.py`), so `context.py` stays the object graph only.

`/metrics` shows connection counts, traffic by message type, upstream latencies and error
rates; with `METRICS_TOKEN` set it answers only `Authorization: Bearer <METRICS_TOKEN>` (compared
in constant time, so response timing does not reveal how much of a guess was right) and 401
otherwise. Unset, it is open, for a scraper that reaches it over a private network only.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, raw
from sanic_ext import openapi

from diminuendo import __version__
from diminuendo.gateway.headers import security_headers
from diminuendo.observability.metrics import CONTENT_TYPE
from diminuendo.protocol.errors import ErrorCode

if TYPE_CHECKING:  # the Gateway builds a HealthReport, so only the type is imported here
    from diminuendo.gateway.context import Gateway

bp = Blueprint("health")

HEALTH_CACHE_S = 0.25


class HealthReport:
    """The §9 health body of one gateway, and its encodings cached for probes."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._started_at = time.monotonic()
        # Which process answered, behind a load balancer or among supervised workers: random,
        # new per process (no hostname or PID on an unauthenticated route); in fleet mode also
        # the id its leases carry, so the owner of a session can be told apart.
        self.instance_id = gateway.instance_id
        self._cache: _HealthSnapshot | None = None
        self._probe_headers = "".join(
            f"{name}: {value}\r\n"
            for name, value in security_headers(gateway.settings.dev_mode).items()
        ).encode()

    def invalidate(self) -> None:
        """Drop the cached body: the next probe sees a state change (draining) at once."""
        self._cache = None

    def body(self) -> tuple[dict[str, Any], int]:
        """The §9 body, built fresh: O(active sessions), so probes read `response`."""
        gateway = self._gateway
        dependencies = gateway.health.results()
        if gateway.fleet is not None:
            dependencies["valkey"] = gateway.fleet.availability.report()
        status = "ok" if all(d["ok"] for d in dependencies.values()) else "degraded"
        if gateway.draining:
            status = "draining"
        sessions = gateway.sessions
        body = {
            "status": status,
            "version": __version__,
            "uptimeS": round(time.monotonic() - self._started_at, 1),
            "instanceId": self.instance_id,
            "devMode": gateway.settings.dev_mode,
            "dependencies": dependencies,
            "metrics": {
                "connections": len(gateway.hub.connections),
                "authenticatedConnections": gateway.hub.authenticated_count,
                "activeSessions": len(sessions.active),
                "runningTurns": sum(1 for a in sessions.active.values() if a.turn),
                "rssBytes": _rss_bytes(),
                "eventsOut": sessions.events_published,
                "tasks": len(asyncio.all_tasks()),
            },
        }
        return body, 503 if gateway.draining else 200

    def response(self) -> tuple[bytes, int]:
        """The encoded health body and status, rebuilt at most every `HEALTH_CACHE_S`.

        A load balancer, an orchestrator and a dashboard may each probe many times a second;
        building the body walks every active session and every asyncio task and reads /proc, so
        one build serves the probes of the next quarter second. Only the instance metrics can be
        that old: a new probe result or the start of draining rebuilds the body at once."""
        cached = self._cached()
        return cached.body, cached.status

    def probe_response(self) -> bytes:
        """The whole HTTP/1.1 response to a plain `GET /health`, for the protocol's fast path."""
        return self._cached().http_response

    def _cached(self) -> _HealthSnapshot:
        now = time.monotonic()
        cached = self._cache
        probes = self._probes_version()
        if cached is None or now - cached.built_at >= HEALTH_CACHE_S or cached.probes != probes:
            body, status = self.body()
            encoded = msgspec.json.encode(body)
            http_response = _http_response(status, encoded, self._probe_headers)
            cached = self._cache = _HealthSnapshot(now, probes, encoded, status, http_response)
        return cached

    def _probes_version(self) -> tuple[int, int]:
        """Changes with any dependency's state: the upstream probes and, in fleet mode, Valkey's
        availability, so a cached body never hides a change of either."""
        gateway = self._gateway
        fleet = gateway.fleet.availability.version if gateway.fleet is not None else 0
        return gateway.health.version, fleet


class _HealthSnapshot(NamedTuple):
    built_at: float  # time.monotonic()
    probes: tuple[int, int]  # `_probes_version()` it was built from
    body: bytes
    status: int
    http_response: bytes  # the whole response, for the protocol's fast path


def _http_response(status: int, body: bytes, headers: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Service Unavailable"
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s"
        b"connection: keep-alive\r\n\r\n%s" % (status, reason, len(body), headers, body)
    )


def _rss_bytes() -> int:
    """Resident set size from /proc (Linux); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _health(request: Request) -> HTTPResponse:
    gateway: Gateway = request.app.ctx.gateway
    body, status = gateway.health_report.response()
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
