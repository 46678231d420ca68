"""Problems no single variable shows: settings that must agree with one another, or with the
environment around them. Each check reads the parsed `Settings` (defaults filled in) and returns
one line per problem, so `load_settings` can report them all in one pass (OPERATIONS.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from diminuendo.auth.endpoints import resolve_auth0
from diminuendo.auth.verifier import MAX_LEEWAY_S
from diminuendo.settings_parsers import is_loopback

if TYPE_CHECKING:
    from diminuendo.settings import Settings

# The upstreams: the prefix of their `*_URL` / `*_API_KEY` variables and their two fields.
UPSTREAMS = (
    ("PODIUM", "podium_url", "podium_api_key"),
    ("ENSEMBLE", "ensemble_url", "ensemble_api_key"),
    ("UNISON", "unison_url", "unison_api_key"),
)

# The OTLP exporter reads its request headers from these; they are how a hosted collector is
# given its key, so with either set the endpoint carries a credential like an upstream URL.
_OTLP_HEADER_VARS = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")


def cross_checks(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Every problem of the settings as a whole, in the order an operator fixes them."""
    problems: list[str] = []
    if settings.auth0_domain:
        try:
            resolve_auth0(settings.auth0_domain)
        except ValueError as exc:
            problems.append(f"AUTH0_DOMAIN: {exc}")
    if not settings.allow_insecure_upstreams:
        problems += _insecure_upstreams(settings, env)
    if settings.ws_hard_cap_bytes < settings.ws_max_message_bytes:
        problems.append("WS_HARD_CAP_BYTES: must not be smaller than WS_MAX_MESSAGE_BYTES")
    if settings.auth_clock_leeway_s > MAX_LEEWAY_S:
        problems.append(f"AUTH_CLOCK_LEEWAY: must be at most {MAX_LEEWAY_S} seconds")
    return problems + _fleet_problems(settings)


def _insecure_upstreams(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """One problem per URL that would send a credential in clear: plain `http://` to a host
    that is not loopback. Upstream URLs always carry their API key; the OTLP endpoint only when
    exporter headers are configured (spans themselves hold no key)."""
    carriers = [
        (f"{prefix}_URL", url_attr, f"{prefix}_API_KEY") for prefix, url_attr, _ in UPSTREAMS
    ]
    headers = [name for name in _OTLP_HEADER_VARS if (env.get(name) or "").strip()]
    if headers:
        carriers.append(("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_exporter_otlp_endpoint", headers[0]))
    problems = []
    for name, attr, secret in carriers:
        parts = urlsplit(getattr(settings, attr))
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            problems.append(
                f"{name}: plain http:// to {parts.hostname} would send {secret} in clear; "
                "use https:// (or set ALLOW_INSECURE_UPSTREAMS=true on a trusted network)"
            )
    return problems


def _fleet_problems(settings: Settings) -> list[str]:
    """Configurations that would look like a fleet and not be one. Several workers without a
    shared Valkey each keep their own sessions and replay windows (a client resuming on another
    worker loses its window), so production refuses them; dev mode keeps allowing it (one
    developer, and the build smoke checks the worker supervisor). With `REDIS_URL` the workers
    share one Valkey (docs/FLEET.md)."""
    if settings.workers > 1 and not settings.dev_mode and not settings.redis_url:
        return [
            "WORKERS: more than 1 worker needs REDIS_URL (a shared Valkey); without it each "
            "worker keeps its own sessions and replay — run one worker per process instead"
        ]
    return []
