"""One typed, validated settings object read from the environment (and `.env`).

Validation collects every problem before failing so an operator fixes a bad deploy in one pass:
`load_settings` raises `ConfigError` whose `problems` are printed one per line by the CLI, which
then exits 2 (OPERATIONS.md §3). Secrets are kept out of `repr()` and `describe()`.

This module is the table (`Settings`, one `_setting` per variable) and the loading; how one
variable's text is parsed is in `settings_parsers.py`, the checks between variables in
`settings_checks.py`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from diminuendo.settings_checks import UPSTREAMS, cross_checks
from diminuendo.settings_parsers import (
    is_loopback,
    parse_bool,
    parse_choice,
    parse_delay,
    parse_edges,
    parse_int,
    parse_key_prefix,
    parse_origins,
    parse_rate,
    parse_redis_url,
    parse_seconds,
    parse_size,
    parse_str,
    parse_url,
    without_credentials,
)
from diminuendo.upstreams.sealing import SealingKey

LOCAL_STACK_API_KEY = "local-dev-key"
# The dev stack's PODIUM_SECRETS_KEY, shared by the gateway in dev mode and the Podium stand-in
# (base64url of b"diminuendo-local-stack-dev-key!!"): public, so it only ever seals dev secrets.
LOCAL_STACK_SECRETS_KEY = "ZGltaW51ZW5kby1sb2NhbC1zdGFjay1kZXYta2V5ISE="
DEV_UPSTREAM_URLS = {
    "podium": "http://127.0.0.1:8002",
    "ensemble": "http://127.0.0.1:8004",
    "unison": "http://127.0.0.1:8005",
}
LOG_LEVELS = ("trace", "debug", "info", "warning", "error")
ROLES = ("guest", "viewer", "developer", "admin", "owner")


class ConfigError(Exception):
    """Bad configuration; `problems` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class _Var:
    name: str
    attr: str
    parse: Callable[[str], Any]


def _setting(
    variable: str,
    parse: Callable[[str], Any],
    default: Any,
    *,
    secret: bool = False,
    credentials_in_url: bool = False,
) -> Any:
    """A `Settings` field read from the environment variable `variable` by `parse`: the one table
    that `_VARS`, `SETTING_NAMES` and `describe()` are derived from. A secret is kept out of
    `repr()` and `describe()`; a URL that may carry credentials is kept out of `repr()` and shown
    without them."""
    metadata = {"variable": variable, "parse": parse}
    if secret:
        metadata["secret"] = True
    if credentials_in_url:
        metadata["credentials_in_url"] = True
    return field(default=default, repr=not (secret or credentials_in_url), metadata=metadata)


@dataclass(frozen=True)
class Settings:
    dev_mode: bool = _setting("DEV_MODE", parse_bool, False)
    dev_mode_allow_remote: bool = _setting("DEV_MODE_ALLOW_REMOTE", parse_bool, False)
    host: str = _setting("HOST", parse_str, "0.0.0.0")
    port: int = _setting("PORT", parse_int(0, 65535), 8080)
    workers: int = _setting("WORKERS", parse_int(1, 64), 1)
    # RUF009 cannot see that `_setting` returns a `field()`; the defaults are immutable.
    data_dir: Path = _setting("DATA_DIR", lambda raw: Path(raw.strip()), Path("./data"))  # noqa: RUF009
    log_level: str = _setting("LOG_LEVEL", parse_choice(LOG_LEVELS), "info")
    log_format: str = _setting("LOG_FORMAT", parse_choice(("json", "pretty")), "json")

    auth0_domain: str = _setting("AUTH0_DOMAIN", parse_str, "")
    auth0_client_id: str = _setting("AUTH0_CLIENT_ID", parse_str, "")
    auth0_audience: str = _setting("AUTH0_AUDIENCE", parse_str, "")
    auth_role_claim: str = _setting("AUTH_ROLE_CLAIM", parse_str, "https://diminuendo/role")
    auth_tenant_claim: str = _setting(
        "AUTH_TENANT_CLAIM", parse_str, "https://diminuendo/tenant_id"
    )
    auth_default_role: str = _setting("AUTH_DEFAULT_ROLE", parse_choice(ROLES), "viewer")
    allowed_origins: tuple[str, ...] = _setting("ALLOWED_ORIGINS", parse_origins, ())

    podium_url: str = _setting("PODIUM_URL", parse_url, "")
    podium_api_key: str = _setting("PODIUM_API_KEY", parse_str, "", secret=True)
    podium_secrets_key: SealingKey | None = _setting(  # noqa: RUF009
        "PODIUM_SECRETS_KEY", SealingKey.parse, None, secret=True
    )
    ensemble_url: str = _setting("ENSEMBLE_URL", parse_url, "")
    ensemble_api_key: str = _setting("ENSEMBLE_API_KEY", parse_str, "", secret=True)
    unison_url: str = _setting("UNISON_URL", parse_url, "")
    unison_api_key: str = _setting("UNISON_API_KEY", parse_str, "", secret=True)

    otel_exporter_otlp_endpoint: str = _setting("OTEL_EXPORTER_OTLP_ENDPOINT", parse_url, "")
    otel_service_name: str = _setting("OTEL_SERVICE_NAME", parse_str, "diminuendo")

    max_connections: int = _setting("MAX_CONNECTIONS", parse_int(1, 1_000_000), 10_000)
    max_active_sessions: int = _setting("MAX_ACTIVE_SESSIONS", parse_int(1, 1_000_000), 5_000)
    session_idle_timeout_s: float = _setting("SESSION_IDLE_TIMEOUT", parse_seconds, 900.0)
    ws_send_queue_max: int = _setting("WS_SEND_QUEUE_MAX", parse_int(1, 1_000_000), 1_000)
    ws_max_message_bytes: int = _setting("WS_MAX_MESSAGE_BYTES", parse_size, 1024 * 1024)
    ws_hard_cap_bytes: int = _setting("WS_HARD_CAP_BYTES", parse_size, 4 * 1024 * 1024)
    ws_rate_limit: tuple[int, float] = _setting("WS_RATE_LIMIT", parse_rate, (60, 10.0))
    ws_heartbeat_interval_s: float = _setting("WS_HEARTBEAT_INTERVAL", parse_seconds, 30.0)
    ws_idle_timeout_s: float = _setting("WS_IDLE_TIMEOUT", parse_seconds, 90.0)
    auth_timeout_s: float = _setting("AUTH_TIMEOUT", parse_seconds, 10.0)
    auth_failure_limit: tuple[int, float] = _setting("AUTH_FAILURE_LIMIT", parse_rate, (10, 60.0))
    graceful_shutdown_timeout_s: float = _setting("GRACEFUL_SHUTDOWN_TIMEOUT", parse_seconds, 15.0)
    drain_delay_s: float = _setting("DRAIN_DELAY", parse_delay, 0.0)
    replay_max_events: int = _setting("REPLAY_MAX_EVENTS", parse_int(1, 10_000_000), 10_000)
    replay_max_bytes: int = _setting("REPLAY_MAX_BYTES", parse_size, 8 * 1024 * 1024)
    replay_budget_bytes: int = _setting("REPLAY_BUDGET_BYTES", parse_size, 512 * 1024 * 1024)
    gc_freeze_interval_s: float = _setting("GC_FREEZE_INTERVAL", parse_delay, 10.0)
    gc_full_interval_s: float = _setting("GC_FULL_INTERVAL", parse_delay, 1800.0)

    # Limits that keep one client, user or tenant from taking the instance (PROTOCOL §13).
    ws_send_buffer_bytes: int = _setting("WS_SEND_BUFFER_BYTES", parse_size, 8 * 1024 * 1024)
    reply_max_bytes: int = _setting("REPLY_MAX_BYTES", parse_size, 1024 * 1024)
    max_active_sessions_per_tenant: int = _setting(
        "MAX_ACTIVE_SESSIONS_PER_TENANT", parse_int(1, 1_000_000), 1_000
    )
    max_joined_per_connection: int = _setting(
        "MAX_JOINED_PER_CONNECTION", parse_int(1, 100_000), 100
    )
    max_connections_per_user: int = _setting(
        "MAX_CONNECTIONS_PER_USER", parse_int(1, 1_000_000), 100
    )
    max_pending_per_ip: int = _setting("MAX_PENDING_PER_IP", parse_int(1, 1_000_000), 50)
    rpc_batch_max: int = _setting("RPC_BATCH_MAX", parse_int(1, 1_000), 20)
    auth_clock_leeway_s: float = _setting("AUTH_CLOCK_LEEWAY", parse_delay, 30.0)
    auth_refresh_window_s: float = _setting("AUTH_REFRESH_WINDOW", parse_seconds, 60.0)
    proxies_count: int = _setting("PROXIES_COUNT", parse_int(0, 32), 0)
    real_ip_header: str = _setting("REAL_IP_HEADER", parse_str, "")
    forwarded_secret: str = _setting("FORWARDED_SECRET", parse_str, "", secret=True)
    metrics_token: str = _setting("METRICS_TOKEN", parse_str, "", secret=True)
    allow_insecure_upstreams: bool = _setting("ALLOW_INSECURE_UPSTREAMS", parse_bool, False)

    # Edge adapters (docs/EDGES.md): none in production unless listed; dev mode: all installed.
    edge_adapters: tuple[str, ...] = _setting("EDGE_ADAPTERS", parse_edges, ())

    # Fleet mode (issue 16, docs/FLEET.md): the Valkey that instances share. The URL may carry a
    # password, so it is shown in `describe()` without its credentials and never in `repr()`.
    redis_url: str = _setting("REDIS_URL", parse_redis_url, "", credentials_in_url=True)
    redis_key_prefix: str = _setting("REDIS_KEY_PREFIX", parse_key_prefix, "dim")
    replay_ttl_s: float = _setting("REPLAY_TTL", parse_seconds, 24 * 3600.0)
    session_lease_ttl_s: float = _setting("SESSION_LEASE_TTL", parse_seconds, 10.0)

    def describe(self) -> dict[str, Any]:
        """The effective configuration for `check-config`, with every secret replaced, keyed by
        the variable an operator sets (`AUTH_CLOCK_LEEWAY`, not the field `auth_clock_leeway_s`)."""
        described: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = "<set>" if value else "<unset>"
            elif f.metadata.get("credentials_in_url"):
                value = without_credentials(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            described[f.metadata["variable"]] = value
        return described


# Derived from the fields, so a setting is declared in one place.
_VARS = tuple(_Var(f.metadata["variable"], f.name, f.metadata["parse"]) for f in fields(Settings))

# Every variable the gateway reads: `ssm-env` exports no other name (besides AWS_*, OTEL_*).
SETTING_NAMES = frozenset(var.name for var in _VARS)


def read_environment(
    environ: Mapping[str, str] | None = None, dotenv_path: Path | None = Path(".env")
) -> dict[str, str]:
    """The environment with `.env` underneath it: a real variable always wins over the file."""
    merged: dict[str, str] = {}
    if dotenv_path is not None and dotenv_path.is_file():
        merged.update(
            {
                k: v
                for k, v in dotenv_values(dotenv_path, interpolate=False).items()
                if v is not None
            }
        )
    merged.update(os.environ if environ is None else environ)
    return merged


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: Path | None = Path(".env")
) -> Settings:
    """Parse and validate; raises `ConfigError` listing every problem found."""
    env = read_environment(environ, dotenv_path)
    values, problems = _parse_variables(env)
    if values.get("dev_mode", False):
        problems += _apply_dev_defaults(values, env)
    else:
        problems += _missing_production_variables(env)
    settings = Settings(**values)
    problems += cross_checks(settings, env)
    if problems:
        raise ConfigError(problems)
    return settings


def _parse_variables(env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Every variable that is set, parsed into its field; a blank one counts as unset (except a
    boolean, where "" is false)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for var in _VARS:
        raw = env.get(var.name)
        if raw is None or (raw.strip() == "" and var.parse is not parse_bool):
            continue
        try:
            values[var.attr] = var.parse(raw)
        except ValueError as exc:
            problems.append(f"{var.name}: {exc}")
    return values, problems


def _apply_dev_defaults(values: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Dev mode: loopback, the local stack's upstreams and keys, every installed edge adapter."""
    values.setdefault("host", "127.0.0.1")
    values.setdefault("port", 8001)
    values.setdefault("log_format", "pretty")
    values.setdefault("podium_secrets_key", SealingKey.parse(LOCAL_STACK_SECRETS_KEY))
    for prefix, url_attr, key_attr in UPSTREAMS:
        if url_attr not in values and f"{prefix}_URL" not in env:
            values[url_attr] = DEV_UPSTREAM_URLS[prefix.lower()]
            values.setdefault(key_attr, LOCAL_STACK_API_KEY)
    if "edge_adapters" not in values and "EDGE_ADAPTERS" not in env:
        from diminuendo.edges import SDKS, installed

        values["edge_adapters"] = tuple(name for name in SDKS if installed(name))
    host = values["host"]
    if not is_loopback(host) and not values.get("dev_mode_allow_remote", False):
        return [
            f"HOST: dev mode bypasses authentication, so it only binds loopback; {host!r} "
            "is not loopback (set DEV_MODE_ALLOW_REMOTE=true to override)"
        ]
    return []


def _missing_production_variables(env: Mapping[str, str]) -> list[str]:
    required = ["AUTH0_DOMAIN", "AUTH0_AUDIENCE"]
    for prefix, _url, _key in UPSTREAMS:
        required += [f"{prefix}_URL", f"{prefix}_API_KEY"]
    required.append("PODIUM_SECRETS_KEY")
    return [
        f"{name}: required unless DEV_MODE=true"
        for name in required
        if not (env.get(name) or "").strip()
    ]
