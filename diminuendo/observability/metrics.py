"""Prometheus metrics (OPERATIONS.md §6) on a registry of our own.

One registry per process: Diminuendo runs one Sanic worker per process by default (scale with
processes or containers, each scraped on its own — docs/DECISIONS.md, "Operations"), which keeps
gauges exact and avoids prometheus_client's multiprocess-mode limits. Gauges that describe live
state (connections, sessions by state) are read at scrape time instead of being kept in step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._messages_in = Counter(
            "diminuendo_ws_messages_in_total", "Client frames received", registry=r
        )
        self._errors = Counter(
            "diminuendo_errors_total", "Errors sent to clients", ["code"], registry=r
        )
        self._rate_limited = Counter(
            "diminuendo_rate_limited_total", "Messages rejected by the rate limit", registry=r
        )
        self.replays = Counter(
            "diminuendo_replay_requests_total", "join/get_events replays served", registry=r
        )
        self.slow_consumers = Counter(
            "diminuendo_slow_consumer_closes_total", "Connections closed with 4008", registry=r
        )
        self._upstream_seconds = Histogram(
            "diminuendo_upstream_request_seconds",
            "Upstream call latency",
            ["service"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._upstream_failures = Counter(
            "diminuendo_upstream_failures_total", "Failed upstream calls", ["service"], registry=r
        )

    def message_in(self) -> None:
        self._messages_in.inc()

    def error(self, code: str) -> None:
        self._errors.labels(code).inc()

    def rate_limited(self) -> None:
        self._rate_limited.inc()

    def upstream_call(self, service: str, seconds: float, ok: bool) -> None:
        self._upstream_seconds.labels(service).observe(seconds)
        if not ok:
            self._upstream_failures.labels(service).inc()

    def live_gauges(
        self,
        connections: Callable[[], float],
        authenticated: Callable[[], float],
        sessions_by_state: Callable[[], dict[str, int]],
        events_published: Callable[[], float],
    ) -> None:
        """Register gauges computed from live state at scrape time."""
        Gauge(
            "diminuendo_connections", "Open WebSocket connections", registry=self.registry
        ).set_function(connections)
        Gauge(
            "diminuendo_authenticated_connections",
            "Authenticated WebSocket connections",
            registry=self.registry,
        ).set_function(authenticated)
        Gauge(
            "diminuendo_events_published",
            "Session events published since start (read from the session service)",
            registry=self.registry,
        ).set_function(events_published)
        by_state = Gauge(
            "diminuendo_active_sessions",
            "Sessions held by this process, by state",
            ["state"],
            registry=self.registry,
        )
        states = ("activating", "ready", "running", "waiting", "deactivating", "error", "inactive")
        for state in states:
            by_state.labels(state).set_function(
                lambda state=state: sessions_by_state().get(state, 0)
            )

    def cache_gauges(self, sizes: Mapping[str, Callable[[], float]]) -> None:
        """`diminuendo_cache_entries{cache}`: entries held by each bounded lookup cache."""
        gauge = Gauge(
            "diminuendo_cache_entries",
            "Entries held by each bounded lookup cache",
            ["cache"],
            registry=self.registry,
        )
        for name, size in sizes.items():
            gauge.labels(name).set_function(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
