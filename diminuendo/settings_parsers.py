"""The parsers of `Settings` fields: each turns one environment variable's text into its typed
value or raises `ValueError` with what an operator should write instead (`ConfigError` puts the
variable's name in front). Plus the two URL/host helpers the settings and their users share.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true or false")


def parse_int(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return value

    return parse


def parse_seconds(raw: str) -> float:
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


def parse_delay(raw: str) -> float:
    """Like `parse_seconds`, but 0 (no delay) is allowed."""
    return 0.0 if raw.strip().lower().removesuffix("s") in ("0", "0.0") else parse_seconds(raw)


def parse_size(raw: str) -> int:
    match = _SIZE.match(raw)
    if not match:
        raise ValueError("expected a size such as 1048576, 512KiB or 1MiB")
    value = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    if value < 1024:
        raise ValueError("must be at least 1 KiB")
    return value


def parse_rate(raw: str) -> tuple[int, float]:
    """`60/10s` → 60 messages per 10-second sliding window."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s?\s*", raw)
    if not match or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
        raise ValueError("expected COUNT/SECONDS such as 60/10s")
    return int(match.group(1)), float(match.group(2))


def parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def parse_url(raw: str) -> str:
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


def parse_redis_url(raw: str) -> str:
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


def parse_key_prefix(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,32}", value):
        raise ValueError("expected 1-32 letters, digits or _ . : - (such as dim)")
    return value


def parse_origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
    return origins


def parse_str(raw: str) -> str:
    return raw.strip()


def parse_edges(raw: str) -> tuple[str, ...]:
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
