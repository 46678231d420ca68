"""The security headers every HTTP response carries (PROTOCOL.md §8), in one place: Sanic's
response middleware adds them, and the health probe's fast path writes them itself."""

from __future__ import annotations

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def security_headers(dev_mode: bool) -> dict[str, str]:
    """HSTS only outside dev mode: a browser would pin plain-HTTP localhost to HTTPS."""
    return SECURITY_HEADERS if dev_mode else {**SECURITY_HEADERS, HSTS[0]: HSTS[1]}
