"""Turn the ``AUTH0_DOMAIN`` setting into the exact issuer and JWKS URL the verifier trusts.

The issuer is compared byte for byte with the token's ``iss``, so it is derived once, here, in
Auth0's canonical form (``https://<domain>/`` with the trailing slash). A full URL is accepted so
tests and local identity providers can plug in over plain http, but only on loopback: anywhere
else plain http would let a network attacker swap the signing keys.
"""

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import urlsplit

_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_MAX_HOST_LEN = 253


class Auth0Endpoints(NamedTuple):
    """Where tokens come from (``iss``) and where their signing keys are published."""

    issuer: str
    jwks_url: str


def resolve_auth0(domain: str) -> Auth0Endpoints:
    """Derive the issuer and JWKS URL from a bare Auth0 domain or a full base URL.

    Raises ``ValueError`` with a one-line reason that is safe to print at start-up: the message
    never repeats the input, so a URL carrying credentials cannot leak through it.
    """
    if not isinstance(domain, str) or not domain.strip():
        raise ValueError("Auth0 domain is empty")
    value = domain.strip()
    if not value.isprintable() or " " in value:
        raise ValueError("Auth0 domain contains whitespace or control characters")
    url = value if "://" in value else f"https://{value}"
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("Auth0 domain is not a valid host name or URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("Auth0 domain URL must use https (or http for a loopback host)")
    if "@" in parts.netloc:
        raise ValueError("Auth0 domain URL must not contain credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("Auth0 domain URL must not have a path, query or fragment")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise ValueError("Auth0 domain URL has an invalid port") from None
    ip = _parse_ip(host)
    if ip is None and not _is_host_name(host):
        raise ValueError("Auth0 domain is not a valid host name or URL")
    if scheme == "http" and not (host == "localhost" or (ip is not None and ip.is_loopback)):
        raise ValueError("Auth0 domain URL must use https; plain http is only allowed for loopback")
    netloc = f"[{host}]" if ip is not None and ip.version == 6 else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    issuer = f"{scheme}://{netloc}/"
    return Auth0Endpoints(issuer=issuer, jwks_url=f"{issuer}.well-known/jwks.json")


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The host as an IP address, or None when it is a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_host_name(host: str) -> bool:
    """True for a syntactically valid DNS name (underscores tolerated for container names)."""
    if not host or len(host) > _MAX_HOST_LEN:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in host.split("."))
