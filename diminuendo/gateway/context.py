"""`Gateway`: the per-worker object graph the Sanic edges read from `app.ctx.gateway`.

Built in `before_server_start` (Sanic spawns workers, so nothing here may be created at import or
in the main process) and torn down in `after_server_stop`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, NamedTuple

import httpx
import msgspec

from diminuendo import __version__
from diminuendo.auth.admission import Admission
from diminuendo.auth.authenticator import Authenticator
from diminuendo.auth.endpoints import resolve_auth0
from diminuendo.auth.expiry import ExpirySchedule
from diminuendo.auth.identity import DEV_IDENTITY, Identity, Role
from diminuendo.auth.jwks import JwksCache
from diminuendo.auth.verifier import TokenVerifier
from diminuendo.gateway.headers import security_headers
from diminuendo.gateway.hub import Hub
from diminuendo.members import MemberService
from diminuendo.observability.metrics import Metrics
from diminuendo.ratelimit import KeyedWindows
from diminuendo.sessions.service import SessionService
from diminuendo.settings import Settings
from diminuendo.upstreams.ensemble import EnsembleClient
from diminuendo.upstreams.http import UpstreamHttp
from diminuendo.upstreams.podium import PodiumClient
from diminuendo.upstreams.probes import HealthMonitor
from diminuendo.upstreams.unison import UnisonClient

HEALTH_CACHE_S = 0.25


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.monotonic()
        self.draining = False
        self._health_cache: _HealthSnapshot | None = None
        self._probe_headers = "".join(
            f"{name}: {value}\r\n" for name, value in security_headers(settings.dev_mode).items()
        ).encode()
        self.dev_identity: Identity = DEV_IDENTITY
        self.metrics = Metrics()
        observe = self.metrics.upstream_call
        self._http = {
            "podium": UpstreamHttp(
                "podium", settings.podium_url, settings.podium_api_key, observe=observe
            ),
            "ensemble": UpstreamHttp(
                "ensemble", settings.ensemble_url, settings.ensemble_api_key, observe=observe
            ),
            "unison": UpstreamHttp(
                "unison", settings.unison_url, settings.unison_api_key, observe=observe
            ),
        }
        self.podium = PodiumClient(
            self._http["podium"],
            settings.podium_api_key,
            secrets_key=settings.podium_secrets_key,
            # What the agent needs to reach the inference authority (UPSTREAMS.md §1).
            instance_secrets={"ensemble_api_key": settings.ensemble_api_key},
        )
        self.ensemble = EnsembleClient(self._http["ensemble"])
        self.unison = UnisonClient(self._http["unison"])
        self.hub = Hub(
            settings.ws_heartbeat_interval_s,
            idle_timeout_s=settings.ws_idle_timeout_s,
            admission=Admission(
                max_total=settings.max_connections,
                # Dev mode has one identity for every client: a per-user cap would cap them all.
                max_per_user=None if settings.dev_mode else settings.max_connections_per_user,
                max_pending_per_address=settings.max_pending_per_ip,
            ),
            expiry=ExpirySchedule(settings.auth_refresh_window_s, settings.auth_clock_leeway_s),
        )
        self.members = MemberService(self.unison, on_role_change=self._member_changed)
        self.rest_limits = KeyedWindows(*settings.ws_rate_limit)
        self.sessions = SessionService(
            podium=self.podium,
            unison=self.unison,
            max_active_sessions=settings.max_active_sessions,
            max_active_sessions_per_tenant=settings.max_active_sessions_per_tenant,
            idle_timeout_s=settings.session_idle_timeout_s,
            replay_max_events=settings.replay_max_events,
            replay_max_bytes=settings.replay_max_bytes,
            replay_budget_bytes=settings.replay_budget_bytes,
            broadcast=self.hub.broadcast,
        )
        self.health = HealthMonitor(
            {
                "podium": self.podium.health,
                "ensemble": self.ensemble.health,
                "unison": self.unison.health,
            }
        )
        self._jwks_client: httpx.AsyncClient | None = None
        self._authenticator: Authenticator | None = None
        if not settings.dev_mode:
            self._jwks_client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
            endpoints = resolve_auth0(settings.auth0_domain)
            self.jwks = JwksCache(endpoints.jwks_url, self._jwks_client)
            verifier = TokenVerifier(
                endpoints=endpoints,
                audiences=[settings.auth0_audience, settings.auth0_client_id],
                jwks=self.jwks,
                leeway_s=settings.auth_clock_leeway_s,
            )
            self._authenticator = Authenticator(
                verifier,
                member_role=self.members.role_of,
                tenant_claim=settings.auth_tenant_claim,
                role_claim=settings.auth_role_claim,
                default_role=Role.parse(settings.auth_default_role),
                failure_limit=settings.auth_failure_limit,
            )
        self.metrics.live_gauges(
            connections=lambda: len(self.hub.connections),
            authenticated=lambda: self.hub.authenticated_count,
            sessions_by_state=self.sessions_by_state,
            events_published=lambda: self.sessions.events_published,
        )
        self.metrics.cache_gauges(
            {
                "deployments": lambda: self.podium.cache_sizes()["deployments"],
                "unknown_agent_types": lambda: self.podium.cache_sizes()["unknown_agent_types"],
                "member_roles": lambda: self.members.cached_roles,
                "session_records": lambda: self.sessions.cached_records,
            }
        )

    def __repr__(self) -> str:
        return f"Gateway(dev_mode={self.settings.dev_mode})"

    def _member_changed(self, tenant_id: str, user_id: str, role: Role | None) -> None:
        """A member record changed: the user's open connections take the new role at once and
        leave the sessions it no longer lets them read (PROTOCOL.md §5)."""
        for connection in self.hub.update_role(tenant_id, user_id, role):
            assert connection.identity is not None
            for session_id in self.sessions.unreadable(connection.identity, connection.joined):
                self.sessions.leave(session_id, connection)
                connection.joined.discard(session_id)
                connection.send({"type": "session_left", "sessionId": session_id})

    async def start(self) -> None:
        self.hub.start()
        self.health.start()
        if self._authenticator is not None:
            await self.jwks.prefetch()

    async def stop(self) -> None:
        await self.hub.stop()
        await self.health.stop()
        await self.sessions.shutdown()
        for client in self._http.values():
            await client.aclose()
        if self._jwks_client is not None:
            await self._jwks_client.aclose()

    async def authenticate(self, token: str, client_address: str) -> Identity:
        if self._authenticator is None:
            return self.dev_identity
        return await self._authenticator.authenticate(token, client_address)

    def origin_allowed(self, origin: str) -> bool:
        if self.settings.dev_mode:
            return True
        allowed = self.settings.allowed_origins
        return not allowed or origin.rstrip("/") in allowed

    def sessions_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for active in self.sessions.active.values():
            counts[active.status.value] = counts.get(active.status.value, 0) + 1
        return counts

    def start_draining(self) -> None:
        """Refuse new work from now on; the next health probe already says `draining`."""
        self.draining = True
        self.sessions.draining = True
        self._health_cache = None

    def health_body(self) -> tuple[dict[str, Any], int]:
        """The §9 body, built fresh: O(active sessions), so probes read `health_response`."""
        dependencies = self.health.results()
        status = "ok" if all(d["ok"] for d in dependencies.values()) else "degraded"
        if self.draining:
            status = "draining"
        body = {
            "status": status,
            "version": __version__,
            "uptimeS": round(time.monotonic() - self.started_at, 1),
            "devMode": self.settings.dev_mode,
            "dependencies": dependencies,
            "metrics": {
                "connections": len(self.hub.connections),
                "authenticatedConnections": self.hub.authenticated_count,
                "activeSessions": len(self.sessions.active),
                "runningTurns": sum(1 for a in self.sessions.active.values() if a.turn),
                "rssBytes": _rss_bytes(),
                "eventsOut": self.sessions.events_published,
                "tasks": len(asyncio.all_tasks()),
            },
        }
        return body, 503 if self.draining else 200

    def health_response(self) -> tuple[bytes, int]:
        """The encoded health body and status, rebuilt at most every `HEALTH_CACHE_S`.

        A load balancer, an orchestrator and a dashboard may each probe many times a second;
        building the body walks every active session and every asyncio task and reads /proc, so
        one build serves the probes of the next quarter second. Only the instance metrics can be
        that old: a new probe result or the start of draining rebuilds the body at once."""
        cached = self._health_cached()
        return cached.body, cached.status

    def health_probe_response(self) -> bytes:
        """The whole HTTP/1.1 response to a plain `GET /health`, for the protocol's fast path."""
        return self._health_cached().http_response

    def _health_cached(self) -> _HealthSnapshot:
        now = time.monotonic()
        cached = self._health_cache
        if (
            cached is None
            or now - cached.built_at >= HEALTH_CACHE_S
            or cached.probes != self.health.version
        ):
            body, status = self.health_body()
            encoded = msgspec.json.encode(body)
            cached = self._health_cache = _HealthSnapshot(
                now,
                self.health.version,
                encoded,
                status,
                _http_response(status, encoded, self._probe_headers),
            )
        return cached


class _HealthSnapshot(NamedTuple):
    built_at: float  # time.monotonic()
    probes: int  # HealthMonitor.version it was built from
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
