"""`Gateway`: the per-worker object graph the Sanic edges read from `app.ctx.gateway`.

Built in `before_server_start` (Sanic spawns workers, so nothing here may be created at import or
in the main process) and torn down in `after_server_stop`.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import httpx

from diminuendo.auth.admission import Admission
from diminuendo.auth.authenticator import Authenticator
from diminuendo.auth.endpoints import resolve_auth0
from diminuendo.auth.expiry import ExpirySchedule
from diminuendo.auth.identity import DEV_IDENTITY, Identity, Role
from diminuendo.auth.jwks import JwksCache
from diminuendo.auth.verifier import TokenVerifier
from diminuendo.gateway.connection import Connection
from diminuendo.gateway.health import HealthReport
from diminuendo.gateway.hub import Hub
from diminuendo.gateway.sse import SseSubscriber
from diminuendo.members import MemberService
from diminuendo.observability.metrics import Metrics
from diminuendo.protocol.events import SessionLeft
from diminuendo.ratelimit import KeyedWindows
from diminuendo.sessions.service import SessionService
from diminuendo.sessions.stream import Subscriber
from diminuendo.settings import Settings
from diminuendo.upstreams.ensemble import EnsembleClient
from diminuendo.upstreams.http import CallObserver, UpstreamHttp
from diminuendo.upstreams.podium import PodiumClient
from diminuendo.upstreams.probes import HealthMonitor
from diminuendo.upstreams.unison import UnisonClient

CLOSE_GOING_AWAY = 1001

if TYPE_CHECKING:  # imported only with REDIS_URL set: without it, redis-py is never loaded
    from diminuendo.fleet.runtime import Fleet


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.draining = False
        self.dev_identity: Identity = DEV_IDENTITY
        # Random, new per process: `/health`'s `instanceId` and, in fleet mode, the leases'.
        self.instance_id = secrets.token_hex(6)
        self.fleet: Fleet | None = _fleet(settings, self.instance_id)
        self.metrics = Metrics()
        self._http = _upstream_clients(settings, observe=self.metrics.upstream_call)
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
            reply_max_bytes=settings.reply_max_bytes,
            broadcast=self.hub.broadcast,
        )
        if self.fleet is not None:
            self.sessions.activation.join_fleet(self.fleet.ownership, _end_subscriptions)
            self.fleet.serve(self.sessions, self.hub, self.members)
        self.health = HealthMonitor(
            {
                "podium": self.podium.health,
                "ensemble": self.ensemble.health,
                "unison": self.unison.health,
            }
        )
        self.health_report = HealthReport(self)
        self._jwks_client: httpx.AsyncClient | None = None
        self._authenticator: Authenticator | None = None
        if not settings.dev_mode:
            self._authenticator = self._production_authenticator(settings)
        self._register_gauges()

    def _production_authenticator(self, settings: Settings) -> Authenticator:
        """Auth0 JWT verification against the tenant's JWKS, with member-record roles."""
        self._jwks_client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        endpoints = resolve_auth0(settings.auth0_domain)
        self.jwks = JwksCache(endpoints.jwks_url, self._jwks_client)
        verifier = TokenVerifier(
            endpoints=endpoints,
            audiences=[settings.auth0_audience, settings.auth0_client_id],
            jwks=self.jwks,
            leeway_s=settings.auth_clock_leeway_s,
        )
        return Authenticator(
            verifier,
            member_role=self.members.role_of,
            tenant_claim=settings.auth_tenant_claim,
            role_claim=settings.auth_role_claim,
            default_role=Role.parse(settings.auth_default_role),
            failure_limit=settings.auth_failure_limit,
        )

    def _register_gauges(self) -> None:
        """Gauges read at scrape time from the live objects, so nothing counts twice."""
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
                connection.send(SessionLeft(session_id=session_id))

    async def start(self) -> None:
        if self.fleet is not None:
            await self.fleet.start()  # ≤ 1 s and never raises: Valkey down means degraded
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
        if self.fleet is not None:
            await self.fleet.stop()

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
        self.health_report.invalidate()


def _end_subscriptions(subscribers: set[Subscriber]) -> None:
    """Fleet mode: a session this instance owned is another's now (its lease was lost). Its
    subscribers' clients reconnect (WebSocket 1001, as on a restart; an SSE stream ends) and
    rejoin with `{afterSeq, epoch}` wherever they land, so they lose nothing."""
    for subscriber in subscribers:
        if isinstance(subscriber, Connection):
            subscriber.close(CLOSE_GOING_AWAY, "session moved")
        elif isinstance(subscriber, SseSubscriber):
            subscriber.overflow()


def _fleet(settings: Settings, instance_id: str) -> Fleet | None:
    """The Valkey side of this process when `REDIS_URL` is set (docs/FLEET.md), else None and
    nothing of it imported."""
    if not settings.redis_url:
        return None
    from diminuendo.fleet.runtime import Fleet

    return Fleet(settings, instance_id)


def _upstream_clients(settings: Settings, *, observe: CallObserver) -> dict[str, UpstreamHttp]:
    """One HTTP client per upstream, each reporting its calls' latency to `observe`."""
    return {
        service: UpstreamHttp(service, url, api_key, observe=observe)
        for service, url, api_key in (
            ("podium", settings.podium_url, settings.podium_api_key),
            ("ensemble", settings.ensemble_url, settings.ensemble_api_key),
            ("unison", settings.unison_url, settings.unison_api_key),
        )
    }
