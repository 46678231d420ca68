"""One typed, validated settings object read from the environment (and `.env`).

Validation collects every problem before failing so an operator fixes a bad deploy in one pass:
`load_settings` raises `ConfigError` whose `problems` are printed one per line by the CLI, which
then exits 2 (OPERATIONS.md §3). Secrets are kept out of `repr()` and `describe()`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from diminuendo.auth.endpoints import resolve_auth0
from diminuendo.auth.verifier import MAX_LEEWAY_S
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
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true or false")


def _parse_int(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return value

    return parse


def _parse_seconds(raw: str) -> float:
    text = raw.strip().lower().removesuffix("s")
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|kb|k|mib|mb|m)?\s*$", re.I)
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 2**20, "mb": 2**20, "mib": 2**20}


def _parse_delay(raw: str) -> float:
    """Like `_parse_seconds`, but 0 (no delay) is allowed."""
    return 0.0 if raw.strip().lower().removesuffix("s") in ("0", "0.0") else _parse_seconds(raw)


def _parse_size(raw: str) -> int:
    match = _SIZE.match(raw)
    if not match:
        raise ValueError("expected a size such as 1048576, 512KiB or 1MiB")
    value = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    if value < 1024:
        raise ValueError("must be at least 1 KiB")
    return value


def _parse_rate(raw: str) -> tuple[int, float]:
    """`60/10s` → 60 messages per 10-second sliding window."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s?\s*", raw)
    if not match or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
        raise ValueError("expected COUNT/SECONDS such as 60/10s")
    return int(match.group(1)), float(match.group(2))


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _parse_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as https://podium.internal")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials (use the *_API_KEY variable)")
    if parts.query or parts.fragment:
        raise ValueError("must not contain a query or fragment")
    return value


_REDIS_SCHEMES = {"redis": "redis", "rediss": "rediss", "valkey": "redis", "valkeys": "rediss"}


def _parse_redis_url(raw: str) -> str:
    """`redis://`, `rediss://` (TLS), `valkey://` or `valkeys://`, returned in the scheme redis-py
    reads (`valkey` → `redis`); a password in the URL is allowed (it is how Valkey ACLs are
    given) and `describe()` hides it."""
    value = raw.strip()
    parts = urlsplit(value)
    scheme = _REDIS_SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError("expected a URL such as redis://valkey.internal:6379/0 (or rediss://)")
    try:
        parts.port  # noqa: B018 -- urlsplit checks the port only when asked
    except ValueError:
        raise ValueError("the port is not a number between 0 and 65535") from None
    return parts._replace(scheme=scheme).geturl()


def without_credentials(url: str) -> str:
    """`url` with any user name and password replaced by `***`, for logs and `describe()`."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


def _parse_key_prefix(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,32}", value):
        raise ValueError("expected 1-32 letters, digits or _ . : - (such as dim)")
    return value


def _parse_origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
    return origins


def _parse_str(raw: str) -> str:
    return raw.strip()


def _parse_edges(raw: str) -> tuple[str, ...]:
    """`agui,mcp,a2a`, `all` or `none`; each named adapter's SDK must be installed."""
    from diminuendo.edges import SDKS, installed

    value = raw.strip().lower()
    if value in ("", "none"):
        return ()
    names = tuple(SDKS) if value == "all" else tuple(n.strip() for n in value.split(",") if n)
    unknown = [n for n in names if n not in SDKS]
    if unknown:
        raise ValueError(f"unknown adapter {unknown[0]!r}; choose from {', '.join(SDKS)}")
    missing = [n for n in names if not installed(n)]
    if missing:
        raise ValueError(
            f"{', '.join(missing)} needs its SDK: pip install 'diminuendo[edges]' "
            "(or drop it from EDGE_ADAPTERS)"
        )
    return tuple(dict.fromkeys(names))


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
    dev_mode: bool = _setting("DEV_MODE", _parse_bool, False)
    dev_mode_allow_remote: bool = _setting("DEV_MODE_ALLOW_REMOTE", _parse_bool, False)
    host: str = _setting("HOST", _parse_str, "0.0.0.0")
    port: int = _setting("PORT", _parse_int(0, 65535), 8080)
    workers: int = _setting("WORKERS", _parse_int(1, 64), 1)
    # RUF009 cannot see that `_setting` returns a `field()`; the defaults are immutable.
    data_dir: Path = _setting("DATA_DIR", lambda raw: Path(raw.strip()), Path("./data"))  # noqa: RUF009
    log_level: str = _setting("LOG_LEVEL", _parse_choice(LOG_LEVELS), "info")
    log_format: str = _setting("LOG_FORMAT", _parse_choice(("json", "pretty")), "json")

    auth0_domain: str = _setting("AUTH0_DOMAIN", _parse_str, "")
    auth0_client_id: str = _setting("AUTH0_CLIENT_ID", _parse_str, "")
    auth0_audience: str = _setting("AUTH0_AUDIENCE", _parse_str, "")
    auth_role_claim: str = _setting("AUTH_ROLE_CLAIM", _parse_str, "https://diminuendo/role")
    auth_tenant_claim: str = _setting(
        "AUTH_TENANT_CLAIM", _parse_str, "https://diminuendo/tenant_id"
    )
    auth_default_role: str = _setting("AUTH_DEFAULT_ROLE", _parse_choice(ROLES), "viewer")
    allowed_origins: tuple[str, ...] = _setting("ALLOWED_ORIGINS", _parse_origins, ())

    podium_url: str = _setting("PODIUM_URL", _parse_url, "")
    podium_api_key: str = _setting("PODIUM_API_KEY", _parse_str, "", secret=True)
    podium_secrets_key: SealingKey | None = _setting(  # noqa: RUF009
        "PODIUM_SECRETS_KEY", SealingKey.parse, None, secret=True
    )
    ensemble_url: str = _setting("ENSEMBLE_URL", _parse_url, "")
    ensemble_api_key: str = _setting("ENSEMBLE_API_KEY", _parse_str, "", secret=True)
    unison_url: str = _setting("UNISON_URL", _parse_url, "")
    unison_api_key: str = _setting("UNISON_API_KEY", _parse_str, "", secret=True)

    otel_exporter_otlp_endpoint: str = _setting("OTEL_EXPORTER_OTLP_ENDPOINT", _parse_url, "")
    otel_service_name: str = _setting("OTEL_SERVICE_NAME", _parse_str, "diminuendo")

    max_connections: int = _setting("MAX_CONNECTIONS", _parse_int(1, 1_000_000), 10_000)
    max_active_sessions: int = _setting("MAX_ACTIVE_SESSIONS", _parse_int(1, 1_000_000), 5_000)
    session_idle_timeout_s: float = _setting("SESSION_IDLE_TIMEOUT", _parse_seconds, 900.0)
    ws_send_queue_max: int = _setting("WS_SEND_QUEUE_MAX", _parse_int(1, 1_000_000), 1_000)
    ws_max_message_bytes: int = _setting("WS_MAX_MESSAGE_BYTES", _parse_size, 1024 * 1024)
    ws_hard_cap_bytes: int = _setting("WS_HARD_CAP_BYTES", _parse_size, 4 * 1024 * 1024)
    ws_rate_limit: tuple[int, float] = _setting("WS_RATE_LIMIT", _parse_rate, (60, 10.0))
    ws_heartbeat_interval_s: float = _setting("WS_HEARTBEAT_INTERVAL", _parse_seconds, 30.0)
    ws_idle_timeout_s: float = _setting("WS_IDLE_TIMEOUT", _parse_seconds, 90.0)
    auth_timeout_s: float = _setting("AUTH_TIMEOUT", _parse_seconds, 10.0)
    auth_failure_limit: tuple[int, float] = _setting("AUTH_FAILURE_LIMIT", _parse_rate, (10, 60.0))
    graceful_shutdown_timeout_s: float = _setting("GRACEFUL_SHUTDOWN_TIMEOUT", _parse_seconds, 15.0)
    drain_delay_s: float = _setting("DRAIN_DELAY", _parse_delay, 0.0)
    replay_max_events: int = _setting("REPLAY_MAX_EVENTS", _parse_int(1, 10_000_000), 10_000)
    replay_max_bytes: int = _setting("REPLAY_MAX_BYTES", _parse_size, 8 * 1024 * 1024)
    replay_budget_bytes: int = _setting("REPLAY_BUDGET_BYTES", _parse_size, 512 * 1024 * 1024)
    gc_freeze_interval_s: float = _setting("GC_FREEZE_INTERVAL", _parse_delay, 10.0)
    gc_full_interval_s: float = _setting("GC_FULL_INTERVAL", _parse_delay, 1800.0)

    # Limits that keep one client, user or tenant from taking the instance (PROTOCOL §13).
    ws_send_buffer_bytes: int = _setting("WS_SEND_BUFFER_BYTES", _parse_size, 8 * 1024 * 1024)
    reply_max_bytes: int = _setting("REPLY_MAX_BYTES", _parse_size, 1024 * 1024)
    max_active_sessions_per_tenant: int = _setting(
        "MAX_ACTIVE_SESSIONS_PER_TENANT", _parse_int(1, 1_000_000), 1_000
    )
    max_joined_per_connection: int = _setting(
        "MAX_JOINED_PER_CONNECTION", _parse_int(1, 100_000), 100
    )
    max_connections_per_user: int = _setting(
        "MAX_CONNECTIONS_PER_USER", _parse_int(1, 1_000_000), 100
    )
    max_pending_per_ip: int = _setting("MAX_PENDING_PER_IP", _parse_int(1, 1_000_000), 50)
    rpc_batch_max: int = _setting("RPC_BATCH_MAX", _parse_int(1, 1_000), 20)
    auth_clock_leeway_s: float = _setting("AUTH_CLOCK_LEEWAY", _parse_delay, 30.0)
    auth_refresh_window_s: float = _setting("AUTH_REFRESH_WINDOW", _parse_seconds, 60.0)
    proxies_count: int = _setting("PROXIES_COUNT", _parse_int(0, 32), 0)
    real_ip_header: str = _setting("REAL_IP_HEADER", _parse_str, "")
    forwarded_secret: str = _setting("FORWARDED_SECRET", _parse_str, "", secret=True)
    metrics_token: str = _setting("METRICS_TOKEN", _parse_str, "", secret=True)
    allow_insecure_upstreams: bool = _setting("ALLOW_INSECURE_UPSTREAMS", _parse_bool, False)

    # Edge adapters (docs/EDGES.md): none in production unless listed; dev mode: all installed.
    edge_adapters: tuple[str, ...] = _setting("EDGE_ADAPTERS", _parse_edges, ())

    # Fleet mode (issue 16, docs/FLEET.md): the Valkey that instances share. The URL may carry a
    # password, so it is shown in `describe()` without its credentials and never in `repr()`.
    redis_url: str = _setting("REDIS_URL", _parse_redis_url, "", credentials_in_url=True)
    redis_key_prefix: str = _setting("REDIS_KEY_PREFIX", _parse_key_prefix, "dim")
    replay_ttl_s: float = _setting("REPLAY_TTL", _parse_seconds, 24 * 3600.0)
    session_lease_ttl_s: float = _setting("SESSION_LEASE_TTL", _parse_seconds, 10.0)

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

_UPSTREAMS = (
    ("PODIUM", "podium_url", "podium_api_key"),
    ("ENSEMBLE", "ensemble_url", "ensemble_api_key"),
    ("UNISON", "unison_url", "unison_api_key"),
)


# The OTLP exporter reads its request headers from these; they are how a hosted collector is
# given its key, so with either set the endpoint carries a credential like an upstream URL.
_OTLP_HEADER_VARS = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")


def _insecure_upstreams(values: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """One problem per URL that would send a credential in clear: plain `http://` to a host
    that is not loopback. Upstream URLs always carry their API key; the OTLP endpoint only when
    exporter headers are configured (spans themselves hold no key)."""
    carriers = [
        (f"{prefix}_URL", url_attr, f"{prefix}_API_KEY") for prefix, url_attr, _ in _UPSTREAMS
    ]
    headers = [name for name in _OTLP_HEADER_VARS if (env.get(name) or "").strip()]
    if headers:
        carriers.append(("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_exporter_otlp_endpoint", headers[0]))
    problems = []
    for name, attr, secret in carriers:
        parts = urlsplit(values.get(attr) or "")
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            problems.append(
                f"{name}: plain http:// to {parts.hostname} would send {secret} in clear; "
                "use https:// (or set ALLOW_INSECURE_UPSTREAMS=true on a trusted network)"
            )
    return problems


def _fleet_problems(values: Mapping[str, Any]) -> list[str]:
    """Configurations that would look like a fleet and not be one. Several workers without a
    shared Valkey each keep their own sessions and replay windows (a client resuming on another
    worker loses its window), so production refuses them; dev mode keeps allowing it (one
    developer, and the build smoke checks Sanic's worker spawning). `REDIS_URL` is refused until
    the Valkey layer (`diminuendo.fleet`) is wired into sessions: accepted and ignored, it would
    mislead an operator into thinking the instances share their state."""
    problems = []
    if values.get("redis_url"):
        problems.append(
            "REDIS_URL: the Valkey-backed fleet mode is not wired into sessions yet (issue 16)"
        )
    elif values.get("workers", 1) > 1 and not values.get("dev_mode", False):
        problems.append(
            "WORKERS: more than 1 worker needs REDIS_URL (a shared Valkey); without it each "
            "worker keeps its own sessions and replay — run one worker per process instead"
        )
    return problems


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    problems += _cross_checks(values, env)
    if problems:
        raise ConfigError(problems)
    return Settings(**values)


def _parse_variables(env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Every variable that is set, parsed into its field; a blank one counts as unset (except a
    boolean, where "" is false)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for var in _VARS:
        raw = env.get(var.name)
        if raw is None or (raw.strip() == "" and var.parse is not _parse_bool):
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
    for prefix, url_attr, key_attr in _UPSTREAMS:
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
    for prefix, _url, _key in _UPSTREAMS:
        required += [f"{prefix}_URL", f"{prefix}_API_KEY"]
    required.append("PODIUM_SECRETS_KEY")
    return [
        f"{name}: required unless DEV_MODE=true"
        for name in required
        if not (env.get(name) or "").strip()
    ]


def _cross_checks(values: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """Problems no single variable shows: values that must agree with one another."""
    problems: list[str] = []
    if values.get("auth0_domain"):
        try:
            resolve_auth0(values["auth0_domain"])
        except ValueError as exc:
            problems.append(f"AUTH0_DOMAIN: {exc}")
    if not values.get("allow_insecure_upstreams", False):
        problems += _insecure_upstreams(values, env)
    max_message = values.get("ws_max_message_bytes", Settings.ws_max_message_bytes)
    if values.get("ws_hard_cap_bytes", Settings.ws_hard_cap_bytes) < max_message:
        problems.append("WS_HARD_CAP_BYTES: must not be smaller than WS_MAX_MESSAGE_BYTES")
    if values.get("auth_clock_leeway_s", Settings.auth_clock_leeway_s) > MAX_LEEWAY_S:
        problems.append(f"AUTH_CLOCK_LEEWAY: must be at most {MAX_LEEWAY_S} seconds")
    return problems + _fleet_problems(values)
